"""Locust users of a flash sale: shoppers through the waiting room, bots, an admin watching.

    locust --headless -f loadtests/locustfile.py --host http://127.0.0.1:8000 --sale S \\
        -u 200 -r 20 -t 60s --stop-timeout 15

Every option is also an environment variable (LOCUST_SALE, LOCUST_ADMIN_KEY, ...; the table is
loadtests/options.py). The master hands its options to its workers, so `--master` / `--worker`
runs need nothing else. Refusals the sale is supposed to give (sold out, limit, rate limited, a
bot turned away) count as successes in Locust's statistics; a failure is always something wrong.
The users and hooks live in loadtests/crowd/; Locust runs the user classes named here.
"""

from flashsale.loadtests.crowd import hooks
from flashsale.loadtests.crowd.admin import Admin
from flashsale.loadtests.crowd.bot import Bot
from flashsale.loadtests.crowd.shopper import Shopper

__all__ = ["Admin", "Bot", "Shopper"]

hooks.register()
