-- docker-compose.yaml's postgres service runs this once, on a new volume:
-- each service keeps its tables (and its migration history) in a database
-- of its own.
CREATE DATABASE users;
CREATE DATABASE audit;
