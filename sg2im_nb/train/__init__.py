"Training: config, losses, the step, the loop and its run folder."
