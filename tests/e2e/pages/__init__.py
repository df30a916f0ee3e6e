"""Page objects for the browser tests: one class per page, the selectors in one place."""
