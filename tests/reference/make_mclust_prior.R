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

suppressPackageStartupMessages({
  library(mclust)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
ref_dir <- if (length(script) == 1) dirname(normalizePath(script)) else "tests/reference"
data_dir <- file.path(ref_dir, "data")
source(file.path(ref_dir, "common.R"))

MODELS <- c("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "EEV", "VEV", "VVV")
G <- 3L

sigmas <- function(par, d) {
  if (d == 1) {
    s2 <- rep_len(par$variance$sigmasq, G)
    return(lapply(s2, function(v) matrix(v, 1, 1)))
  }
  lapply(seq_len(G), function(k) par$variance$sigma[, , k])
}

one_fit <- function(model, X, z, pr) {
  d <- ncol(X)
  ms <- mstep(modelName = model, data = X, z = z, prior = pr)
  es <- estep(modelName = model, data = X, parameters = ms$parameters)
  fit <- me(modelName = model, data = X, z = z, prior = pr)
  list(mstep = list(pro = I(as.numeric(ms$parameters$pro)),
                    mean = t(matrix(ms$parameters$mean, nrow = d)),
                    sigma = sigmas(ms$parameters, d)),
       estep_loglik = es$loglik,
       me = list(loglik = fit$loglik, iterations = I(as.numeric(attr(fit, "info")))))
}

one_set <- function(name, X) {
  d <- ncol(X)
  models <- if (d == 1) c("E", "V") else MODELS
  # The partition of make_mclust_models.R.
  start <- if (d == 1) "V" else "VVV"
  z0 <- unmap(hclass(hc(X), G))
  z <- estep(modelName = start, data = X,
             parameters = mstep(modelName = start, data = X, z = z0)$parameters)$z
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
  iris = read_data(file.path(data_dir, "iris.csv")),
  thyroid = read_data(file.path(data_dir, "thyroid.csv"))
)
sets$eruptions <- read_data(file.path(data_dir, "faithful.csv"))[, 1, drop = FALSE]

out_sets <- lapply(names(sets), function(nm) one_set(nm, sets[[nm]]))
names(out_sets) <- names(sets)

result <- list(
  generator = "tests/reference/make_mclust_prior.R",
  R_version = R.version.string,
  mclust_version = as.character(packageVersion("mclust")),
  date = format(Sys.time(), "%Y-%m-%dT%H:%M:%SZ", tz = "UTC"),
  number_format = "%.17g",
  G = G,
  datasets = out_sets
)

json_path <- file.path(ref_dir, "mclust_prior.json")
writeLines(to_json(result), json_path)
invisible(jsonlite::fromJSON(json_path, simplifyVector = FALSE))
cat(sprintf("wrote %s (%.0f kB)\n", json_path, file.size(json_path) / 1024))
