"""fastssl: fast self-supervised representation learning."""
