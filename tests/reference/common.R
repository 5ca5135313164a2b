# Shared by the reference scripts (sourced, not run on its own): reading the
# data CSVs, mclust's results in the JSON's layout, and a JSON writer.

read_data <- function(path) {
  df <- read.csv(path, colClasses = "numeric", check.names = FALSE)
  X <- as.matrix(df)
  storage.mode(X) <- "double"
  X
}

# Covariances of mclust parameters as a list of G matrices (d = 1: 1 x 1).
component_sigmas <- function(par, d, G) {
  if (d == 1) {
    s2 <- rep_len(par$variance$sigmasq, G)
    return(lapply(s2, function(v) matrix(v, 1, 1)))
  }
  lapply(seq_len(G), function(k) par$variance$sigma[, , k])
}

# A soft partition no model is fitted to: the E-step of the VVV (d = 1: V)
# M-step from the classes of mclust's default hierarchical clustering cut at G.
fixed_soft_partition <- function(X, G) {
  start <- if (ncol(X) == 1) "V" else "VVV"
  z0 <- unmap(hclass(hc(X), G))
  estep(modelName = start, data = X,
        parameters = mstep(modelName = start, data = X, z = z0)$parameters)$z
}

# What every reference file starts with: where its numbers come from.
provenance <- function(generator) {
  list(generator = generator, R_version = R.version.string,
       mclust_version = as.character(packageVersion("mclust")),
       date = format(Sys.time(), "%Y-%m-%dT%H:%M:%SZ", tz = "UTC"),
       number_format = "%.17g")
}

# Write a reference file, check that it parses, and say so.
write_reference <- function(result, json_path) {
  writeLines(to_json(result), json_path)
  invisible(jsonlite::fromJSON(json_path, simplifyVector = FALSE))
  cat(sprintf("wrote %s (%.0f kB)\n", json_path, file.size(json_path) / 1024))
}

# Own writer because jsonlite prints at most 15 significant digits.
# Length-1 atomic vectors become scalars unless wrapped in I(); matrices become
# arrays of rows; NULL / NA / NaN / Inf become null.

json_str <- function(s) {
  ifelse(is.na(s), "null", vapply(s, function(v)
    as.character(jsonlite::toJSON(v, auto_unbox = TRUE)), ""))
}

json_atoms <- function(x) {
  if (is.logical(x)) return(ifelse(is.na(x), "null", ifelse(x, "true", "false")))
  if (is.character(x) || is.factor(x)) return(json_str(as.character(x)))
  if (is.integer(x)) return(ifelse(is.na(x), "null", as.character(x)))
  if (is.numeric(x)) return(ifelse(is.finite(x), sprintf("%.17g", x), "null"))
  stop("unsupported type: ", class(x))
}

to_json <- function(x, indent = 0L) {
  pad <- strrep("  ", indent)
  pad1 <- strrep("  ", indent + 1L)
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    items <- vapply(x, to_json, "", indent = indent + 1L)
    if (!is.null(names(x))) {
      items <- paste0(json_str(names(x)), ": ", items)
      return(paste0("{\n", pad1, paste(items, collapse = paste0(",\n", pad1)),
                    "\n", pad, "}"))
    }
    return(paste0("[\n", pad1, paste(items, collapse = paste0(",\n", pad1)),
                  "\n", pad, "]"))
  }
  if (is.matrix(x)) {
    rows <- vapply(seq_len(nrow(x)), function(i)
      paste0("[", paste(json_atoms(x[i, ]), collapse = ", "), "]"), "")
    return(paste0("[\n", pad1, paste(rows, collapse = paste0(",\n", pad1)),
                  "\n", pad, "]"))
  }
  a <- json_atoms(unclass(x))
  if (length(a) == 1 && !inherits(x, "AsIs")) return(a)
  paste0("[", paste(a, collapse = ", "), "]")
}

