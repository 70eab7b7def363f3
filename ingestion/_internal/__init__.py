"""Private helpers of the edge SDK: the admission rule and the disk spool. Not a public API."""
