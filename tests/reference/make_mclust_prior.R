# Reference numbers from R mclust for its conjugate prior with settings other
# than the defaults (make_mclust_models.R has the defaults).
#
# Run from the repository root, after make_mclust_reference.R has written the
# data CSVs:
#
#   Rscript tests/reference/make_mclust_prior.R
#
# For iris (d = 4), thyroid (d = 5) and faithful's eruptions alone (d = 1,
# models E and V), from the same fixed soft partition z as
# make_mclust_models.R (G = 3), and for every model with a prior, two
# settings:
#
#   * no_shrinkage: priorControl(shrinkage = 0), where mclust's mstep and me
#     M-steps differ for more models than with its default shrinkage;
#   * given: priorControl(shrinkage = 0.5, mean = <first row>, scale = 0.3 I)
#     (0.3 for the spherical, diagonal and one-dimensional models).
#
# Each entry has mstep's proportions, means and covariances, estep's
# log-likelihood at them, and me's log-likelihood and iterations.  Doubles are
# written with "%.17g" (common.R).

suppressPackageStartupMessages(library(mclust))
# This script's folder (the repository's tests/reference when sourced).
file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
ref_dir <- if (length(file_arg) == 1) dirname(normalizePath(sub("^--file=", "", file_arg))) else
  "tests/reference"
source(file.path(ref_dir, "common.R"))

MODELS <- c("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "EEV", "VEV", "VVV")
G <- 3L

one_fit <- function(model, X, z, pr) {
  d <- ncol(X)
  ms <- mstep(modelName = model, data = X, z = z, prior = pr)
  es <- estep(modelName = model, data = X, parameters = ms$parameters)
  fit <- me(modelName = model, data = X, z = z, prior = pr)
  list(mstep = list(pro = I(as.numeric(ms$parameters$pro)),
                    mean = t(matrix(ms$parameters$mean, nrow = d)),
                    sigma = component_sigmas(ms$parameters, d, G)),
       estep_loglik = es$loglik,
       me = list(loglik = fit$loglik, iterations = I(as.numeric(attr(fit, "info")))))
}

one_set <- function(name, X) {
  d <- ncol(X)
  models <- if (d == 1) c("E", "V") else MODELS
  z <- fixed_soft_partition(X, G)  # that of make_mclust_models.R
  message(sprintf("%s (%d x %d)", name, nrow(X), d))
  mean_given <- as.numeric(X[1, ])
  settings <- list(
    no_shrinkage = function(model) priorControl(shrinkage = 0),
    given = function(model) {
      spherical <- d == 1 || substr(model, 3, 3) == "I"
      scale <- if (spherical) 0.3 else 0.3 * diag(d)
      priorControl(shrinkage = 0.5, mean = mean_given, scale = scale)
    })
  out <- lapply(names(settings), function(s) {
    per_model <- lapply(models, function(m) one_fit(m, X, z, settings[[s]](m)))
    names(per_model) <- models
    per_model
  })
  names(out) <- names(settings)
  list(n = nrow(X), d = d, z = z, given = list(shrinkage = 0.5, mean = I(mean_given), scale = 0.3),
       settings = out)
}

sets <- list(
  iris = read_data(file.path(ref_dir, "data", "iris.csv")),
  thyroid = read_data(file.path(ref_dir, "data", "thyroid.csv"))
)
sets$eruptions <- read_data(file.path(ref_dir, "data", "faithful.csv"))[, 1, drop = FALSE]

out_sets <- lapply(names(sets), function(nm) one_set(nm, sets[[nm]]))
names(out_sets) <- names(sets)

result <- c(provenance("tests/reference/make_mclust_prior.R"),
            list(G = G, datasets = out_sets))
write_reference(result, file.path(ref_dir, "mclust_prior.json"))
