"""The toy base models: the toy-sd and toy-vlm trainers, and their shipped weights."""
