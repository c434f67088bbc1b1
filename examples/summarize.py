"""Print what a bon output file chose: per record, the query, the winner and how it won."""

import json
import sys

for line in open(sys.argv[1], encoding="utf-8"):
    record = json.loads(line)
    query = record.get("query") or record.get("messages", [{}])[-1].get("content", "")
    usage = record.get("usage", {})
    final = record["tournament"]["rounds"][-1][0] if record["tournament"]["rounds"] else None
    how = f"final {final['decided_by']} {final['tally']}" if final else "single candidate"
    print(f"[{record['id']}] {query}")
    print(
        f"  best = candidate {record['best_index']} of {len(record['candidates'])} ({how}; "
        f"{usage.get('judge_samples', 0)} judge samples, {usage.get('invalid_votes', 0)} invalid)"
    )
    print("  " + record["best"].strip().replace("\n", "\n  ")[:400])
    print()
