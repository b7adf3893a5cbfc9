"""Pure loss functions, each naming the equation it implements."""
