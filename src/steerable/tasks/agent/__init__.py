"""The built-in agent world: environments a language model acts in (a calculator, a pointer-chain lookup, a
maze, long chains served in rounds), their tasks and demonstrations, and the model trained on them."""
