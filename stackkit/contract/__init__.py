"""The artifact contract: the one place that says what a file in the artifacts folder holds.

``schema`` holds column names, dtypes and the validators; ``store`` every read and atomic write;
``errors`` the errors a user may see. Every other module reads and writes through these.
"""
