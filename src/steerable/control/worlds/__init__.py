"""The control worlds: gymnasium environments that fork (``clone``), their STL tasks, and offline datasets."""
