# Where the corpora are. The mini recipe synthesizes its data on the spot and needs none.
