"""The built-in web app: its static files, served with content-hashed URLs, and its pages."""
