"""Markdown table of the measure.sh runs: RUNS=dir python table.py"""
import json, os

RUNS = os.environ.get("RUNS", "runs")
order = ["base-bsa10", "health10", "nb10", "conv30", "best30", "best30c", "best30c-mse", "best30c-alpha0", "best30-nb", "best30-alpha0", "best30-mse"]
rows = []
for name in order:
    p = f"{RUNS}/{name}/result.json"
    if not os.path.exists(p):
        continue
    r = json.load(open(p))
    e = r["eval"]; t = r["train"]
    q = e["feature_frequency_quantiles"]
    rows.append(f"| {name} | {t['epochs_run']} ({t.get('best_epoch') or '-'}) | {r['hamming']:.3f} | {r['adc']:.3f} | {r['hamming_r4']:.3f} | {r['adc_r4']:.3f} | "
                f"{e['reconstruction_loss']:.4f} | {e['reconstruction_mse']:.4f} | {e['fixed_topk_reconstruction_loss']:.4f} | {e['active_mean']:.1f} | {e['active_std']:.1f} | "
                f"{e['dead_features']} | {q['p99']:.3f} | {q['max']:.4f} | {t['seconds']:.0f} |")
print("| run | epochs run (best) | Hamming | ADC | Hamming, rescored top 40 | ADC, rescored top 40 | rec. loss (cos) | rec. MSE | fixed-TopK rec. | active mean | active std | dead bits | bit freq p99 | max bit freq | train s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
print("\n".join(rows))
