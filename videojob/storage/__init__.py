"""Where files live, for every process: a local directory or an S3 location
(``location``), how the object store is reached (``settings``), and the store's operations
(``object_store``; it imports aiobotocore, so this package imports nothing by itself).
"""
