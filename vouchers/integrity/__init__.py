"""Programme integrity: flags that hold a redemption out of settlement until a bureau officer
decides (anomaly rules build on them)."""
