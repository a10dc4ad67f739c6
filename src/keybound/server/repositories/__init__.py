"""Repositories: the SQL, one module per table group, returning typed records. The services
call them inside their unit of work's transaction; nothing above them writes SQL."""
