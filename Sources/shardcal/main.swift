print("shardcal")
