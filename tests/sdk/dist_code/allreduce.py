"""An unchanged torchrun-style script: its rank from RANK, an all-reduce over every process."""

import datetime
import json
import os
import socket

import torch
import torch.distributed as dist

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))  # env://: MASTER_ADDR, RANK...
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
host = os.environ["SM_CURRENT_HOST"]
print(f"rank {rank} of {world} on {host}: all-reduced {value.item():g}", flush=True)
result = {"rank": rank, "world": world, "local_rank": int(os.environ["LOCAL_RANK"]), "sum": value.item(),
          "host": host, "address": socket.gethostbyname(host)}
with open(os.path.join(os.environ["SM_MODEL_DIR"], f"rank-{rank}.json"), "w") as f:
    json.dump(result, f)
dist.destroy_process_group()
