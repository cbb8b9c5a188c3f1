"""Built-in algorithms that run here without their closed images (see ``builtin.py``)."""
