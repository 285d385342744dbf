"""What runs in the GPU container: the engine, the job runner and (later) the queue worker."""
