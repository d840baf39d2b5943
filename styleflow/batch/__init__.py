"""Many pairs in one go: the pairs to do (`jobs`), the code that does one pair (`worker`), the
status log that makes a batch resumable (`status`), and the Ray engine (`ray_engine`).
The `styleflow batch` command (styleflow/cli/batch.py) drives them."""
