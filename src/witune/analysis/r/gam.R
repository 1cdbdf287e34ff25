# The Rg GAMs (witune.analysis.gam): `Rscript --vanilla gam.R FOLDER`. FOLDER holds runs.csv (y, wp, r, m: one
# row per run, witune's fit), rows.csv (y, w, r, b, m: run x benchmark rows, the paper's model) and grid.csv
# (wp, w, r). Writes witune's smooth (basis, coefficients, covariance: the flat test is computed in Python), the
# paper's model's prediction on the grid, and info.csv.
args <- commandArgs(TRUE)
suppressMessages(library(mgcv))
runs <- read.csv(file.path(args[1], "runs.csv"))
rows <- read.csv(file.path(args[1], "rows.csv"))
g <- read.csv(file.path(args[1], "grid.csv"))
runs$m <- factor(runs$m); rows$b <- factor(rows$b); rows$m <- factor(rows$m)
ours <- "y ~ te(wp, r, k = 3)"
if (nlevels(runs$m) > 1) ours <- paste(ours, "+ m")
fit <- gam(as.formula(ours), data = runs)
g$m <- factor(levels(runs$m)[1], levels = levels(runs$m))
X <- predict(fit, g, type = "lpmatrix")
idx <- grep("^te\\(", colnames(X))
write.csv(X[, idx, drop = FALSE], file.path(args[1], "basis.csv"), row.names = FALSE)
write.csv(data.frame(coef = coef(fit)[idx]), file.path(args[1], "coef.csv"), row.names = FALSE)
write.csv(vcov(fit)[idx, idx, drop = FALSE], file.path(args[1], "vcov.csv"), row.names = FALSE)
paper <- "y ~ te(w, r, k = 3)"
if (nlevels(rows$b) > 1) paper <- paste(paper, "+ b")
if (nlevels(rows$m) > 1) paper <- paste(paper, "+ m")
pfit <- gam(as.formula(paper), data = rows)
pg <- g; pg$b <- factor(levels(rows$b)[1], levels = levels(rows$b)); pg$m <- factor(levels(rows$m)[1], levels = levels(rows$m))
write.csv(data.frame(fit = predict(pfit, pg)), file.path(args[1], "paper.csv"), row.names = FALSE)
write.csv(data.frame(df_resid = fit$df.residual, edf = sum(fit$edf), formula = ours, paper_formula = paper,
                     mgcv = as.character(packageVersion("mgcv"))), file.path(args[1], "info.csv"), row.names = FALSE)
cat("tick\n")
