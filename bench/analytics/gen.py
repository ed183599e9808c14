"""Deterministic patient tables for `bench/analytics/run.sh`: N rows split over P parties."""
import random, sys, os

def main(rows: int, parties: int, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    rng = random.Random(2026)
    per = [rows // parties + (1 if i < rows % parties else 0) for i in range(parties)]
    for p, n in enumerate(per):
        with open(os.path.join(out, f"party{p}.csv"), "w") as f:
            f.write("age,sex,bmi,systolic_bp,cholesterol,smoker,diabetic\n")
            for _ in range(n):
                age = min(100, max(18, round(rng.gauss(45 + 8 * p, 16))))
                bmi = min(60.0, max(12.0, rng.gauss(26.5, 4.5)))
                bp = min(240, max(70, round(105 + 0.5 * age + rng.gauss(0, 11))))
                chol = min(12.0, max(2.0, rng.gauss(5.2, 0.9)))
                f.write(f"{age},{rng.choice('FM')},{bmi:.1f},{bp},{chol:.1f},"
                        f"{rng.choice(['no', 'no', 'no', 'yes'])},{rng.choice(['no'] * 7 + ['yes'])}\n")
    with open(os.path.join(out, "schema.toml"), "w") as f:
        f.write("""table = "patients"
max_rows = 10000000
[[column]]
name = "age"
type = "int"
min = 18
max = 100
[[column]]
name = "sex"
type = "category"
values = ["F", "M"]
[[column]]
name = "bmi"
type = "decimal"
scale = 1
min = 12.0
max = 60.0
[[column]]
name = "systolic_bp"
type = "int"
min = 70
max = 240
[[column]]
name = "cholesterol"
type = "decimal"
scale = 1
min = 2.0
max = 12.0
[[column]]
name = "smoker"
type = "category"
values = ["no", "yes"]
[[column]]
name = "diabetic"
type = "category"
values = ["no", "yes"]
""")

if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
