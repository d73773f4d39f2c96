"""Runs docker-compose.yaml's services as Docker Compose would wire them, on
a machine with no container engine: a network namespace per service on a
bridge, /etc/hosts for the service names, each image's entrypoint and
healthcheck emulated from what the image really contains (stack.py is the
entry point; images.py says what each image has)."""
