"""The pure core: data models and canonical bytes. No I/O, no clock, no randomness."""
