"""What a training step minimises: the losses (cross-entropy, distillation, hidden-state matching), the output
head applied apart from the model, the loss forward of a micro-batch, and the teacher of a distillation run."""
