# Reference numbers from R mclust for mclust's fourteen covariance models.
#
# Run from the repository root, after make_mclust_reference.R has written the
# data CSVs:
#
#   Rscript tests/reference/make_mclust_models.R
#
# For each data set, from one fixed soft partition z (n x G, G = 3; stored in
# the JSON so that the tests start from exactly the same numbers):
#
#   * mstep(model, X, z): proportions, means and covariance matrices;
#   * estep(model, X, parameters of that mstep): the log-likelihood;
#   * me(model, X, z): EM to mclust's default stopping rule (emControl()),
#     its log-likelihood, parameters and iterations;
#   * nVarParams(model, d, G);
#   * the same mstep, estep and me with mclust's default conjugate prior,
#     prior = priorControl() (posterior-mode estimates; Fraley & Raftery
#     2007), and defaultPrior's hyperparameters for the data.
#
# z is the E-step of the VVV (d = 1: V) M-step from the classes of mclust's
# default hierarchical clustering cut at G: a soft partition no model is
# fitted to.  Data: iris (d = 4), faithful (d = 2), thyroid (d = 5), banknote
# (d = 6) and faithful's eruptions alone (d = 1, where mclust has the models
# E and V only).  Also Mclust(iris, G = 1:9) over all fourteen models (BIC
# table and the best model).
#
# Doubles are written with "%.17g" (common.R).

suppressPackageStartupMessages({
  library(mclust)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
ref_dir <- if (length(script) == 1) dirname(normalizePath(script)) else "tests/reference"
data_dir <- file.path(ref_dir, "data")
source(file.path(ref_dir, "common.R"))

MODELS <- c("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
            "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV")
G <- 3L

params_json <- function(par, d) {
  list(pro = I(as.numeric(par$pro)),
       mean = t(matrix(par$mean, nrow = d)),  # G x d
       sigma = component_sigmas(par, d, G))
}

with_prior <- function(model, X, z) {
  d <- ncol(X)
  pr <- priorControl()
  tryCatch({
    ms <- mstep(modelName = model, data = X, z = z, prior = pr)
    es <- estep(modelName = model, data = X, parameters = ms$parameters)
    fit <- me(modelName = model, data = X, z = z, prior = pr)
    list(mstep = c(params_json(ms$parameters, d),
                   list(returnCode = attr(ms, "returnCode"))),
         estep_loglik = es$loglik,
         me = list(loglik = fit$loglik, returnCode = attr(fit, "returnCode"),
                   iterations = I(as.numeric(attr(fit, "info")))))
  }, error = function(e) list(error = conditionMessage(e)))
}

one_model <- function(model, X, z) {
  d <- ncol(X)
  ms <- mstep(modelName = model, data = X, z = z)
  es <- estep(modelName = model, data = X, parameters = ms$parameters)
  fit <- me(modelName = model, data = X, z = z)
  list(
    prior = with_prior(model, X, z),
    mstep = c(params_json(ms$parameters, d),
              list(info = I(as.numeric(attr(ms, "info")))) ),
    estep_loglik = es$loglik,
    me = c(params_json(fit$parameters, d),
           list(loglik = fit$loglik, iterations = I(as.numeric(attr(fit, "info"))),
                returnCode = attr(fit, "returnCode"))),
    n_var_params = nVarParams(model, d = d, G = G)
  )
}

one_set <- function(name, X) {
  d <- ncol(X)
  models <- if (d == 1) c("E", "V") else MODELS
  z <- fixed_soft_partition(X, G)
  message(sprintf("%s (%d x %d)", name, nrow(X), d))
  out <- lapply(models, function(m) {
    message("  ", m)
    one_model(m, X, z)
  })
  names(out) <- models
  dp <- defaultPrior(X, G, if (d == 1) "V" else "VVV")
  dp_sph <- defaultPrior(X, G, if (d == 1) "E" else "VII")
  prior <- list(shrinkage = dp$shrinkage, mean = I(as.numeric(dp$mean)), dof = dp$dof,
                scale = if (d == 1) dp$scale else as.matrix(dp$scale),
                scale_spherical = dp_sph$scale)
  list(n = nrow(X), d = d, z = z, default_prior = prior, models = out)
}

sets <- list(
  iris = read_data(file.path(data_dir, "iris.csv")),
  faithful = read_data(file.path(data_dir, "faithful.csv")),
  thyroid = read_data(file.path(data_dir, "thyroid.csv")),
  banknote = read_data(file.path(data_dir, "banknote.csv"))
)
sets$eruptions <- sets$faithful[, 1, drop = FALSE]

out_sets <- lapply(names(sets), function(nm) one_set(nm, sets[[nm]]))
names(out_sets) <- names(sets)

# Model choice over all fourteen models on iris.
bic <- mclustBIC(sets$iris, G = 1:9, modelNames = MODELS, verbose = FALSE)
best <- summary(bic, sets$iris)
bic_rows <- lapply(MODELS, function(m) I(as.numeric(bic[, m])))
names(bic_rows) <- MODELS

bic_p <- mclustBIC(sets$iris, G = 1:9, modelNames = MODELS, prior = priorControl(),
                   verbose = FALSE)
best_p <- summary(bic_p, sets$iris)
# Models without a prior in mclust are left out of its table.
with_p <- intersect(MODELS, colnames(bic_p))
bic_p_rows <- lapply(with_p, function(m) I(as.numeric(bic_p[, m])))
names(bic_p_rows) <- with_p

ec <- emControl()
result <- c(provenance("tests/reference/make_mclust_models.R"), list(
  emControl = list(eps = ec$eps, tol = I(ec$tol), itmax = I(ec$itmax)),
  G = G,
  datasets = out_sets,
  iris_selection = list(G = I(1:9), bic = bic_rows, best_model = best$modelName,
                        best_G = best$G, best_bic = best$bic, best_loglik = best$loglik),
  iris_selection_prior = list(G = I(1:9), bic = bic_p_rows, best_model = best_p$modelName,
                              best_G = best_p$G, best_bic = best_p$bic,
                              best_loglik = best_p$loglik)
))

write_reference(result, file.path(ref_dir, "mclust_models.json"))
