# The PLW paper's beta GLMM (section 5.2, Table 3), one fit per dataset: witune.analysis.r_engine runs this file
# as `Rscript --vanilla glmm.R FOLDER`; FOLDER holds data.csv (ds, y, wp, plw, b, m) and options.csv (nboot,
# seed). Writes coef_K.csv, info_K.csv and (with nboot > 0) boot_K.csv per dataset K; prints one "tick" line
# per finished fit so that the caller can show progress.
args <- commandArgs(TRUE)
suppressMessages(library(glmmTMB))
opts <- read.csv(file.path(args[1], "options.csv"))
set.seed(opts$seed[1])
all <- read.csv(file.path(args[1], "data.csv"))
fam <- beta_family(link = "logit")
for (k in sort(unique(all$ds))) {
d <- all[all$ds == k, ]
n <- nrow(d)
d$y <- (d$y * (n - 1) + 0.5) / n  # Smithson & Verkuilen (2006) squeeze into (0, 1)
slopes <- length(unique(d$b)) > 1
models <- length(unique(d$m)) > 1
# The paper's structure first; simpler ones only when it does not converge (the paper, too, "tried
# reducing the complexity of the model" where it failed).
structures <- list(c(if (slopes) "(0 + wp + I(wp^2) | b)", if (models) "(1 | m)"),
                   c(if (slopes) "diag(0 + wp + I(wp^2) | b)", if (models) "(1 | m)"),
                   c(if (models) "(1 | m)"), character(0))
fit_one <- function(lhs, re, data = d) {
  warn <- character(0)
  f <- as.formula(paste(lhs, paste(c("", re), collapse = " + ")))
  m <- tryCatch(withCallingHandlers(glmmTMB(f, data = data, family = fam), warning = function(w) {
    warn <<- c(warn, conditionMessage(w)); invokeRestart("muffleWarning") }), error = function(e) NULL)
  ok <- !is.null(m) && m$fit$convergence == 0 && isTRUE(m$sdr$pdHess) && is.finite(as.numeric(logLik(m)))
  list(model = m, ok = ok, warn = warn, formula = paste(deparse(f, width.cutoff = 500), collapse = ""))
}
llf <- function(fit) if (is.null(fit$model) || !fit$ok) NA else as.numeric(logLik(fit$model))
tried <- character(0)
for (re in unique(lapply(structures, as.character))) {
  full <- fit_one("y ~ wp + I(wp^2)", re)
  if (full$ok) break
  tried <- c(tried, full$formula)
}
null <- fit_one("y ~ 1", re)
if (is.null(full$model)) {  # every structure failed outright: report NA rather than abort the others
  cf <- matrix(NA, 3, 4); v <- matrix(NA, 3, 3)
} else {
  cf <- summary(full$model)$coefficients$cond
  v <- vcov(full$model)$cond
}
out <- data.frame(term = c("Intercept", "wp", "wp2"), estimate = cf[, 1], se = cf[, 2], p = cf[, 4])
write.csv(out, file.path(args[1], paste0("coef_", k, ".csv")), row.names = FALSE)
random_slopes <- any(grepl("| b)", re, fixed = TRUE))
info <- data.frame(llf = llf(full), llf_null = llf(null), cov12 = v[2, 3],
                   df = if (random_slopes) length(unique(d$b)) - 1 else n - 3,
                   converged = full$ok, formula = full$formula, simplified_from = paste(tried, collapse = " | "),
                   warnings = paste(unique(full$warn), collapse = "; "), r_version = R.version.string,
                   glmmtmb = as.character(packageVersion("glmmTMB")))
write.csv(info, file.path(args[1], paste0("info_", k, ".csv")), row.names = FALSE)
cat("tick\n"); flush(stdout())
if (opts$nboot[1] > 0 && full$ok) {  # parametric bootstrap: responses simulated from the fitted model, refitted
  sims <- simulate(full$model, nsim = opts$nboot[1])
  vertex <- numeric(0)
  for (i in seq_along(sims)) {
    b <- fit_one("y ~ wp + I(wp^2)", re, data = transform(d, y = sims[[i]]))
    cb <- if (is.null(b$model)) c(NA, NA, NA) else fixef(b$model)$cond
    vertex <- c(vertex, -cb[2] / (2 * cb[3]))
    if (is.na(cb[3]) || cb[3] >= 0) vertex[length(vertex)] <- NA
    cat("tick\n"); flush(stdout())
  }
  write.csv(data.frame(vertex = vertex), file.path(args[1], paste0("boot_", k, ".csv")), row.names = FALSE)
}
}
