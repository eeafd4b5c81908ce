"""nbqueue."""
