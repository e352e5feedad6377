"""The waiting room as one gateway worker serves it: routes, ticket status, admission loops."""
