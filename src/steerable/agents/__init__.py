"""Language models that act: an agent process over the built-in agent world's environments (or any model whose
chat template calls tools), the searches over environment states, and the command's rows."""
