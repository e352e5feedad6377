"""Outside parties of the order saga as real HTTP servers, and the processes that run them."""
