"""witune: weighted instruction tuning.

Prompt tokens get weight lambda_p, response tokens lambda_r, and the weighted sum of token
negative log-likelihoods is divided by a normaliser counted over the whole optimizer step.
"""

__version__ = "0.1.0"
