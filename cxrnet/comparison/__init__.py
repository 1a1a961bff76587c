"""cxrnet-compare\x27s library: read job folders, fold repeats, render tables, files and plots."""
