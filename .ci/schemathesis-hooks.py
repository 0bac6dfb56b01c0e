"""Schemathesis hooks for dispatch-gate: the request values whose validity
depends on the server's state, which no schema can express.

- `Gate-Position` is valid only up to the log head the server has reached (a
  position ahead of it is a 400). In positive cases the generated integer is
  replaced by 0 ("no particular freshness"); negative cases keep theirs.
- `Last-Event-ID` likewise (the stream resumes after a position of the log).
- `cursor` is valid only as a `next_cursor` this server issued for the same list
  and principal. Positive cases drop a generated cursor; negative cases keep it.

Every operation, check and negative case still runs.
"""
import schemathesis


@schemathesis.hook
def map_case(context, case):
    meta = getattr(case, "meta", None)
    positive = meta is not None and meta.generation.mode.is_positive
    if not positive:
        return case
    for header in ("Gate-Position", "Last-Event-ID"):
        if case.headers and header in case.headers:
            case.headers[header] = "0"
    if case.query and "cursor" in case.query:
        del case.query["cursor"]
    return case
