"""The Wiraya API: the wire format (`codec`), what a call can come to (`results`), the client.

May import `worker.settings` and httpx (the client alone touches httpx). `results` and `codec`
import no HTTP library, so the dispatcher can use them without httpx.
"""
