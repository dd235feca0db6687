"""The task, defined once and numpy only: the exact rule (a tie is flat), the seed's generator,
the value shapes of real streams, and the public real series of the battery."""
