"""Methods: what a run does with the model for each record (generate, DAAM, EmerDiff, PAG, ...)."""
