"""The HTTP service: FastAPI app, durable jobs, upload safety, Ray Serve deployments."""
