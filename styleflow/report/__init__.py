"""What a run leaves for a person besides its images: the loss log (`runlog`), the loss plot
(`plot`) and the animated GIF (`animation`). Only the front ends use them."""
