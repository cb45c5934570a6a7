"""The JSON the API answers with, as pydantic models: what the OpenAPI document publishes and
what the tests hold real answers to. The routes build their answers as they always did; these
models describe them (``extra="forbid"``: a key the model does not name fails the tests).
No aiohttp here."""
