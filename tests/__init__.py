"""The suite runs its gateways and processes in dev mode (well-known secrets, a body customer_id
taken without a customer token), set here before anything reads the settings. The tests about
identity and secrets start production gateways of their own (tests/security_helpers.py)."""

import os

os.environ["FLASHSALE_ENV"] = "dev"
