"""`stack test`: prompt regression tests declared in a stack, run against servers (and against the
models a plan would make, side by side with the current ones)."""
