"""A shop backend's order, end to end, through a client generated from docs/openapi.json.

Allocates a port when the payment clears (idempotent by order id: asking again answers the
same allocation), hands the buyer's proxy line to an HTTP client that fetches a page through
it, reads the usage, and releases the port when the order is cancelled.

    pip install openapi-python-client
    openapi-python-client generate --path docs/openapi.json --meta none \
        --output-path farmhand_client
    FARMHAND_URL=http://127.0.0.1:8080 FARMHAND_MARKETPLACE_KEY=fh_… \
        TARGET_URL=http://example.com/ python3 docs/examples/shop_client.py

CI runs it against the demo stack (.ci/api-contract).
"""

import os
import sys
import urllib.request
import uuid

from farmhand_client import AuthenticatedClient
from farmhand_client.api.allocations import (
    create_allocation,
    get_allocation_usage,
    release_allocation,
)
from farmhand_client.models import AllocationRequest, AllocationView, ErrorBody


def fail(what, response):
    body = response.parsed
    detail = body.error.message if isinstance(body, ErrorBody) else response.content
    sys.exit(f"{what}: HTTP {response.status_code}: {detail}")


def main():
    client = AuthenticatedClient(
        base_url=os.environ["FARMHAND_URL"], token=os.environ["FARMHAND_MARKETPLACE_KEY"]
    )
    # Your order number: opaque, never the buyer's e-mail (docs/privacy.md).
    order = AllocationRequest(order_id=f"shop-order-{uuid.uuid4().hex[:12]}", duration_s=3600)

    created = create_allocation.sync_detailed(client=client, body=order)
    if created.status_code != 201 or not isinstance(created.parsed, AllocationView):
        fail("allocate", created)
    port = created.parsed
    print(f"allocated {port.allocation_id}: {port.host}:{port.http_port} on modem {port.imei}")

    # A retry after a timeout sends the same body and gets the same port back.
    again = create_allocation.sync_detailed(client=client, body=order)
    if again.status_code != 200 or again.parsed.allocation_id != port.allocation_id:
        fail("allocate again (idempotent)", again)

    proxy = f"http://{port.login}:{port.password}@{port.host}:{port.http_port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    with opener.open(os.environ["TARGET_URL"], timeout=30) as page:
        print(f"fetched through the buyer's proxy: HTTP {page.status}, {len(page.read())} bytes")

    usage = get_allocation_usage.sync_detailed(client=client, allocation_id=port.allocation_id)
    if usage.status_code != 200:
        fail("usage", usage)
    print(f"usage so far: {usage.parsed.bytes_in} bytes in, {usage.parsed.bytes_out} out")

    released = release_allocation.sync_detailed(client=client, allocation_id=port.allocation_id)
    if released.status_code not in (200, 202):
        fail("release", released)
    print(f"released: {released.parsed.state}")


if __name__ == "__main__":
    main()
