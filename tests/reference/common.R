# Shared by the reference scripts (sourced, not run on its own): reading the
# data CSVs, and a JSON writer.

read_data <- function(path) {
  df <- read.csv(path, colClasses = "numeric", check.names = FALSE)
  X <- as.matrix(df)
  storage.mode(X) <- "double"
  X
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

