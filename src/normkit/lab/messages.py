"""The lab's message catalog: every text a report shows, in English and Korean.

``MESSAGES[key] = {"en": template, "ko": template}``; templates are ``str.format``
strings whose fields (``{pct}``) are the same in both languages (the tests check it).
Look messages up with :func:`normkit.lab.i18n.tr`. The Korean is written for Korean
readers (합니다체), not translated sentence by sentence; technical names (BatchNorm,
momentum, eval mode) stay as the code spells them.

Keys: ``common.*`` shared words, ``data.*``, ``norm.*`` normalization names,
``report.*`` the HTML page, ``cli.*`` the printed summary, then one prefix per experiment.
"""

from __future__ import annotations

MESSAGES: dict[str, dict[str, str]] = {
    # ------------------------------------------------------------------ shared words
    "common.training_step": {"en": "training step", "ko": "학습 스텝"},
    "common.test_accuracy": {"en": "test accuracy", "ko": "테스트 정확도"},
    "common.network": {"en": "network", "ko": "네트워크"},
    "common.variant": {"en": "variant", "ko": "구성"},
    "common.acc_at_step": {"en": "acc @ step {step}", "ko": "{step}스텝 정확도"},
    "common.steps_to": {"en": "steps to {pct}", "ko": "{pct} 도달 스텝"},
    "common.never": {"en": "never", "ko": "도달 못 함"},
    "common.diverged": {"en": "diverged", "ko": "발산"},
    "data.summary": {
        "en": "{name}: {train} train / {test} test, input {shape}, {classes} classes",
        "ko": "{name}: 학습 {train}개 / 테스트 {test}개, 입력 {shape}, 클래스 {classes}개",
    },
    # ------------------------------------------------------------------ normalizations
    "norm.bn": {"en": "BatchNorm", "ko": "BatchNorm"},
    "norm.gn": {"en": "GroupNorm", "ko": "GroupNorm"},
    "norm.ln": {"en": "LayerNorm", "ko": "LayerNorm"},
    "norm.in": {"en": "InstanceNorm", "ko": "InstanceNorm"},
    "norm.none": {"en": "no norm", "ko": "정규화 없음"},
    "norm.brn": {"en": "BatchRenorm", "ko": "BatchRenorm"},
    "norm.gbn": {"en": "GhostBatchNorm", "ko": "GhostBatchNorm"},
    # ------------------------------------------------------------------ the HTML report
    "report.title_one": {"en": "normkit lab: {name}", "ko": "normkit lab: {name}"},
    "report.title_all": {
        "en": "normkit lab: normalization experiments",
        "ko": "normkit lab: 정규화 실험 모음",
    },
    "report.run_at": {"en": "Run {date}.", "ko": "실행 시각 {date}."},
    "report.col_experiment": {"en": "experiment", "ko": "실험"},
    "report.col_headline": {"en": "headline", "ko": "핵심 결과"},
    "report.col_time": {"en": "time", "ko": "시간"},
    "report.col_value": {"en": "value", "ko": "값"},
    "report.reading": {"en": "What the plot shows:", "ko": "그림 읽는 법:"},
    "report.notes": {"en": "Notes", "ko": "참고"},
    "report.time": {"en": "Time: {seconds} s.", "ko": "소요 시간: {seconds}초."},
    "report.parameters": {"en": "Parameters", "ko": "실행 설정"},
    "report.environment": {"en": "Environment", "ko": "실행 환경"},
    # ------------------------------------------------------------------ the command line
    "cli.announce": {
        "en": "{name}: {title}\n  data {data}; {steps} steps, lr {lr}, batch {batch}, "
        "seed {seed} -> {out}",
        "ko": "{name}: {title}\n  데이터 {data}; {steps}스텝, lr {lr}, 배치 {batch}, "
        "시드 {seed} -> {out}",
    },
    "cli.took": {"en": "{name} took {seconds} s", "ko": "{name}: {seconds}초 걸림"},
    "cli.files": {
        "en": "   time {seconds} s; files in {out}",
        "ko": "   소요 {seconds}초; 결과 파일 {out}",
    },
    "cli.overview": {"en": "normkit lab: all experiments", "ko": "normkit lab: 전체 실험"},
    "cli.total": {"en": "total time {seconds} s", "ko": "전체 소요 시간 {seconds}초"},
    # ------------------------------------------------------------------ ics
    "ics.title": {
        "en": "Internal covariate shift: a sigmoid MLP with and without BatchNorm",
        "ko": "내부 공변량 변화: BatchNorm이 있는 시그모이드 MLP와 없는 MLP",
    },
    "ics.without_bn": {"en": "without BN", "ko": "BN 없음"},
    "ics.with_bn": {"en": "with BN", "ko": "BN 사용"},
    "ics.headline": {
        "en": "with BN {bn_early} test accuracy at step {early}, without {plain_early}; "
        "after {steps} steps {bn_final} vs {plain_final}",
        "ko": "{early}스텝에서 테스트 정확도는 BN을 쓰면 {bn_early}, 안 쓰면 {plain_early}; "
        "{steps}스텝 뒤에는 {bn_final} 대 {plain_final}",
    },
    "ics.col_percentiles": {"en": "input p15/p50/p85", "ko": "입력 p15/p50/p85"},
    "ics.caption": {
        "en": "(a) test accuracy against training steps; (b, c) the 15th, 50th and 85th "
        "percentiles of last-hidden-layer unit {unit}'s sigmoid input over the test set, "
        "without and with BatchNorm (the BN paper's Figure 1).",
        "ko": "(a) 학습 스텝에 따른 테스트 정확도. (b, c) 마지막 은닉층 {unit}번 유닛의 "
        "시그모이드 입력을 테스트 세트 전체에서 잰 15·50·85 백분위수, 왼쪽이 BN 없음, "
        "오른쪽이 BN 사용(BN 논문의 그림 1).",
    },
    "ics.explanation": {
        "en": "Panel (a) shows how fast each network learns: the earlier its curve rises, "
        "the sooner it classifies the test digits correctly. Panels (b) and (c) follow one "
        "unit of the last hidden layer: the middle line is the median of what goes into its "
        "sigmoid, the shaded band the range from the 15th to the 85th percentile. Without "
        "BN the band drifts and widens while the layers below keep learning; with BN it "
        "stays in place from the first steps.",
        "ko": "(a)는 각 네트워크가 얼마나 빨리 배우는지 보여 줍니다. 곡선이 일찍 올라갈수록 "
        "테스트 숫자를 더 빨리 맞히게 된 것입니다. (b)와 (c)는 마지막 은닉층의 유닛 하나를 "
        "따라갑니다. 가운데 선은 그 유닛의 시그모이드로 들어가는 값의 중앙값이고, 음영은 "
        "15~85 백분위수 구간입니다. BN이 없으면 아래층이 학습되는 동안 이 구간이 움직이고 "
        "넓어지지만, BN을 쓰면 처음 몇 스텝부터 제자리를 지킵니다.",
    },
    "ics.note_model": {
        "en": "Data: {data}. Model: MLP {inputs}-100-100-100-{classes}, sigmoid, plain SGD "
        "lr {lr}, batch {batch}; both networks start from the same weights and see the same "
        "mini-batches.",
        "ko": "데이터: {data}. 모델: MLP {inputs}-100-100-100-{classes}, 시그모이드, "
        "모멘텀 없는 SGD(lr {lr}), 배치 {batch}. 두 네트워크는 같은 가중치에서 출발해 같은 "
        "미니배치를 봅니다.",
    },
    "ics.note_percentiles": {
        "en": "Percentiles are taken over the test set with the network in eval mode (BN "
        "normalises with its running statistics), at every evaluation, recorded with "
        "normkit.tools.monitor.",
        "ko": "백분위수는 평가할 때마다 네트워크를 eval 모드(BN은 누적된 running 통계로 "
        "정규화)로 두고 테스트 세트 전체에서 normkit.tools.monitor로 기록했습니다.",
    },
    "ics.note_scale": {
        "en": "The paper trains on MNIST for 50,000 steps; this lab-scale run shows the same "
        "shape in seconds.",
        "ko": "논문은 MNIST에서 50,000스텝을 학습합니다. 이 실험은 규모를 줄여 같은 모양을 "
        "몇 초 만에 보여 줍니다.",
    },
    "ics.panel_accuracy": {"en": "(a) test accuracy", "ko": "(a) 테스트 정확도"},
    "ics.panel_input": {
        "en": "({letter}) {network}: unit {unit}'s sigmoid input",
        "ko": "({letter}) {network}: {unit}번 유닛의 시그모이드 입력",
    },
    "ics.percentiles_axis": {"en": "percentiles 15 / 50 / 85", "ko": "백분위수 15 / 50 / 85"},
    "ics.p85": {"en": "85th", "ko": "85 백분위"},
    "ics.p50": {"en": "50th", "ko": "중앙값"},
    "ics.p15": {"en": "15th", "ko": "15 백분위"},
    "ics.suptitle": {
        "en": "MLP 3x100 sigmoid on {dataset}",
        "ko": "{dataset} 데이터의 3x100 시그모이드 MLP",
    },
    # ------------------------------------------------------------------ lr
    "lr.title": {
        "en": "Final accuracy against learning rate, with and without BatchNorm",
        "ko": "학습률에 따른 최종 정확도: BatchNorm 사용과 미사용",
    },
    "lr.headline_part": {
        "en": "{network}: best {best} at lr {best_lr}, within {usable} of it for lr {low}-{high}",
        "ko": "{network}: 최고 {best}(lr {best_lr}), 그 {usable} 이상을 내는 lr 구간 {low}-{high}",
    },
    "lr.panel": {
        "en": "{dataset}: test accuracy after {steps} steps (batch {batch})",
        "ko": "{dataset}: {steps}스텝 학습 후 테스트 정확도 (배치 {batch})",
    },
    "lr.xlabel": {
        "en": "peak learning rate (SGD, momentum 0.9, cosine decay)",
        "ko": "최대 학습률 (SGD, 모멘텀 0.9, 코사인 감쇠)",
    },
    "lr.col_rate": {"en": "learning rate", "ko": "학습률"},
    "lr.caption": {
        "en": "Test accuracy after training against the (peak) learning rate, log scale; "
        "same initialisation and mini-batches for both networks.",
        "ko": "학습을 마친 뒤의 테스트 정확도를 (최대) 학습률에 대해 그렸습니다(로그 축). 두 "
        "네트워크의 초기 가중치와 미니배치는 같습니다.",
    },
    "lr.explanation": {
        "en": "Each point is one complete training run at the learning rate on the x axis. A "
        "wide plateau means the network trains well over a wide range of rates, so the rate "
        "needs little tuning; where a curve drops to about 10% the run failed (chance level). "
        "With BN the plateau reaches further to the right: larger rates stay usable.",
        "ko": "점 하나가 x축의 학습률로 처음부터 끝까지 학습한 결과 하나입니다. 높은 구간이 "
        "넓을수록 학습률을 까다롭게 고르지 않아도 잘 학습된다는 뜻이고, 10% 근처로 떨어진 "
        "곳은 학습이 실패한 곳(찍기 수준)입니다. BN을 쓰면 높은 구간이 오른쪽으로 더 "
        "이어집니다. 즉 더 큰 학습률도 쓸 수 있습니다.",
    },
    "lr.note_model": {
        "en": "Data: {data}. Model: 3 x [Conv(k=3) -> BN or nothing -> ReLU -> MaxPool(2)] "
        "with 32 channels and a linear classifier; {steps} steps of batch {batch}.",
        "ko": "데이터: {data}. 모델: [Conv(k=3) -> BN 또는 없음 -> ReLU -> MaxPool(2)] x 3, "
        "채널 32개, 선형 분류기. 배치 {batch}로 {steps}스텝 학습했습니다.",
    },
    "lr.note_usable": {
        "en": "'Usable' rates reach at least {usable} of the network's best accuracy. Chance "
        "level is 10%; a diverged run (NaN loss) scores at about chance.",
        "ko": "'쓸 만한' 학습률은 그 네트워크 최고 정확도의 {usable} 이상을 내는 값입니다. "
        "찍기 수준은 10%이고, 발산한 학습(손실이 NaN)은 대략 그 정도 점수가 나옵니다.",
    },
    # ------------------------------------------------------------------ placement
    "placement.title": {
        "en": "BatchNorm before or after the activation",
        "ko": "BatchNorm은 활성화 함수 앞인가 뒤인가",
    },
    "placement.before": {"en": "BN before ReLU", "ko": "ReLU 앞에 BN"},
    "placement.after": {"en": "BN after ReLU", "ko": "ReLU 뒤에 BN"},
    "placement.headline": {
        "en": "{results} final test accuracy (mean of {seeds} seed{plural}, {steps} steps)",
        "ko": "최종 테스트 정확도 {results} (시드 {seeds}개 평균, {steps}스텝)",
    },
    "placement.panel": {
        "en": "{dataset}: test accuracy, mean and range over {seeds} seed(s)",
        "ko": "{dataset}: 테스트 정확도, 시드 {seeds}개의 평균과 범위",
    },
    "placement.panel_zoom": {
        "en": "the same, last half of training",
        "ko": "같은 곡선, 학습 후반부 확대",
    },
    "placement.col_final": {
        "en": "final acc (mean ± sd, points)",
        "ko": "최종 정확도 (평균 ± 표준편차, %p)",
    },
    "placement.col_range": {"en": "final acc range", "ko": "최종 정확도 범위"},
    "placement.col_reach": {"en": "steps to 90% (mean)", "ko": "90% 도달 스텝 (평균)"},
    "placement.caption": {
        "en": "Test accuracy during training for Conv -> BN -> ReLU, Conv -> ReLU -> BN and "
        "no normalization (mean over seeds, shaded: min-max); right: the second half.",
        "ko": "Conv -> BN -> ReLU, Conv -> ReLU -> BN, 정규화 없음의 학습 중 테스트 정확도"
        "(시드 평균, 음영은 최솟값~최댓값). 오른쪽은 학습 후반부입니다.",
    },
    "placement.explanation": {
        "en": "The left panel shows whole training runs: the line is the mean over seeds and "
        "the shaded band how far single seeds stray from it. The right panel enlarges the "
        "second half, where the final differences are decided. Lines whose bands overlap "
        "there are not reliably different.",
        "ko": "왼쪽은 학습 전체입니다. 선은 시드 평균이고, 음영은 시드 하나하나가 평균에서 "
        "얼마나 벗어나는지 보여 줍니다. 오른쪽은 최종 차이가 갈리는 후반부를 확대한 "
        "것입니다. 여기서 음영이 겹치는 두 선은 확실히 다르다고 말하기 어렵습니다.",
    },
    "placement.note_model": {
        "en": "Data: {data}. Model: 3 x conv blocks with 32 channels, kernel 3, max-pooling, "
        "a linear classifier; convolutions keep their bias in all variants.",
        "ko": "데이터: {data}. 모델: 채널 32개, 커널 3인 합성곱 블록 3개와 맥스 풀링, 선형 "
        "분류기. 모든 구성에서 합성곱의 bias를 그대로 둡니다.",
    },
    "placement.note_training": {
        "en": "SGD lr {lr}, momentum {momentum}, cosine decay, batch {batch}; the three "
        "variants of a seed share initial weights and mini-batches.",
        "ko": "SGD lr {lr}, 모멘텀 {momentum}, 코사인 감쇠, 배치 {batch}. 같은 시드의 세 "
        "구성은 초기 가중치와 미니배치를 공유합니다.",
    },
    # ------------------------------------------------------------------ eval-gap
    "eval-gap.title": {
        "en": "Train-mode vs eval-mode accuracy for several BN momenta, and recalibration",
        "ko": "BN momentum별 train 모드와 eval 모드 정확도, 그리고 재보정",
    },
    "eval-gap.train_mode": {"en": "train mode (batch statistics)", "ko": "train 모드 (배치 통계)"},
    "eval-gap.eval_mode": {"en": "eval mode (running estimates)", "ko": "eval 모드 (running 통계)"},
    "eval-gap.recal": {"en": "eval mode, recalibrated", "ko": "eval 모드, 재보정"},
    "eval-gap.cumulative": {"en": "None (cumulative)", "ko": "None (누적 평균)"},
    "eval-gap.headline": {
        "en": "BN momentum {momentum}: eval-mode accuracy up to {gap} points below train mode "
        "during training, {eval_acc} vs {train_acc} at step {steps}; recalibrated {recal}",
        "ko": "BN momentum {momentum}: 학습 중 eval 모드 정확도가 train 모드보다 최대 "
        "{gap}%p 낮음, {steps}스텝에서 {eval_acc} 대 {train_acc}; 재보정하면 {recal}",
    },
    "eval-gap.headline_default": {
        "en": " (torch's default 0.1: largest gap {gap} points, {eval_acc} at the end, "
        "recalibrated {recal})",
        "ko": " (torch 기본값 0.1: 최대 격차 {gap}%p, 마지막에 {eval_acc}, 재보정 {recal})",
    },
    "eval-gap.panel": {"en": "BN momentum {momentum}", "ko": "BN momentum {momentum}"},
    "eval-gap.suptitle": {"en": "{dataset}, batch {batch}", "ko": "{dataset}, 배치 {batch}"},
    "eval-gap.col_momentum": {"en": "BN momentum", "ko": "BN momentum"},
    "eval-gap.col_train": {"en": "train-mode acc", "ko": "train 모드 정확도"},
    "eval-gap.col_eval": {"en": "eval-mode acc", "ko": "eval 모드 정확도"},
    "eval-gap.col_gap": {"en": "gap (points)", "ko": "격차 (%p)"},
    "eval-gap.col_largest": {"en": "largest gap in training", "ko": "학습 중 최대 격차"},
    "eval-gap.col_recal": {"en": "recalibrated acc", "ko": "재보정 정확도"},
    "eval-gap.caption": {
        "en": "Test accuracy during training, one panel per BN momentum: with batch "
        "statistics (train mode), with the running estimates (eval mode), and with "
        "recalibrated population statistics.",
        "ko": "학습 중 테스트 정확도, BN momentum마다 한 칸씩: 배치 통계(train 모드), running "
        "추정치(eval 모드), 재보정한 모집단 통계를 쓴 경우.",
    },
    "eval-gap.explanation": {
        "en": "In each panel the solid line is what training optimises (each batch normalised "
        "with its own statistics) and the dashed line what a deployed model does (the stored "
        "running estimates). The vertical distance between them is the train/eval gap; the "
        "dotted line shows that replacing the estimates by exact statistics closes it.",
        "ko": "각 칸의 실선은 학습이 최적화하는 대상(배치마다 그 배치의 통계로 정규화)이고, "
        "파선은 배포된 모델이 실제로 하는 일(저장해 둔 running 추정치로 정규화)입니다. 두 선 "
        "사이의 세로 거리가 train/eval 격차이며, 점선은 추정치를 정확한 통계로 바꾸면 그 "
        "격차가 사라진다는 것을 보여 줍니다.",
    },
    "eval-gap.note_gap": {
        "en": "Gap = train-mode minus eval-mode accuracy, in percentage points (negative: eval "
        "mode is better, which happens when the batch statistics of small batches are noisier "
        "than good running estimates).",
        "ko": "격차 = train 모드 정확도 - eval 모드 정확도(%p). 음수면 eval 모드가 더 낫다는 "
        "뜻으로, 작은 배치의 통계가 잘 쌓인 running 추정치보다 잡음이 클 때 그렇습니다.",
    },
    "eval-gap.note_model": {
        "en": "Data: {data}. Model: the 3-block CNN with BatchNorm; SGD lr {lr}, momentum "
        "{momentum}, constant rate, batch {batch}.",
        "ko": "데이터: {data}. 모델: BatchNorm을 넣은 3블록 CNN. SGD lr {lr}, 모멘텀 "
        "{momentum}, 고정 학습률, 배치 {batch}.",
    },
    "eval-gap.note_train_mode": {
        "en": "Train-mode accuracy normalises each chunk of {batch} test examples with its own "
        "statistics (what training optimises), on a copy of the model.",
        "ko": "train 모드 정확도는 모델 사본에서 테스트 예제 {batch}개씩 묶어 그 묶음의 "
        "통계로 정규화해 잰 값입니다(학습이 최적화하는 조건).",
    },
    "eval-gap.note_recal": {
        "en": "Recalibration: normkit.tools.recalibrate with its default 'population' "
        "strategy, on a copy of the model at each evaluation: the exact mean and unbiased "
        "variance of every BN layer's input over the whole training set (chunks of {chunk}).",
        "ko": "재보정: 평가할 때마다 모델 사본에 normkit.tools.recalibrate를 기본 "
        "'population' 방식으로 적용했습니다. 학습 세트 전체({chunk}개씩 나눠 계산)에서 각 "
        "BN 층 입력의 정확한 평균과 불편 분산을 구합니다.",
    },
    # ------------------------------------------------------------------ batch-size
    "batch-size.title": {
        "en": "Accuracy against batch size for each normalization (Group Norm paper, Figure 1)",
        "ko": "정규화 종류별 배치 크기에 따른 정확도 (Group Norm 논문 그림 1)",
    },
    "batch-size.col_norm": {"en": "normalization", "ko": "정규화"},
    "batch-size.headline": {
        "en": "BatchNorm vs GroupNorm: {bn} vs {gn} at batch {batch}",
        "ko": "BatchNorm 대 GroupNorm: 배치 {batch}에서 {bn} 대 {gn}",
    },
    "batch-size.headline_large": {
        "en": ", {bn} vs {gn} at batch {batch}",
        "ko": ", 배치 {batch}에서 {bn} 대 {gn}",
    },
    "batch-size.headline_some": {
        "en": "at batch {batch}: {results}",
        "ko": "배치 {batch}: {results}",
    },
    "batch-size.panel": {
        "en": "{dataset}: test accuracy after {examples} examples",
        "ko": "{dataset}: 예제 {examples}개 학습 후 테스트 정확도",
    },
    "batch-size.xlabel": {"en": "batch size", "ko": "배치 크기"},
    "batch-size.caption": {
        "en": "Test accuracy against batch size (log scale) for each normalization, same "
        "number of training examples per run.",
        "ko": "정규화 종류별로 배치 크기(로그 축)에 따른 테스트 정확도를 그렸습니다. 모든 "
        "학습은 같은 수의 예제를 봅니다.",
    },
    "batch-size.explanation": {
        "en": "Each line is one normalization, each point one training run with the batch size "
        "on the x axis. A flat line means the method does not care about the batch size; "
        "BatchNorm's line falls at the left, where a batch has too few examples for its "
        "statistics, while GroupNorm and LayerNorm, which normalise each example on its own, "
        "stay level.",
        "ko": "선 하나가 정규화 한 종류이고, 점 하나가 x축의 배치 크기로 학습한 결과 "
        "하나입니다. 선이 평평하면 그 방법은 배치 크기를 타지 않는다는 뜻입니다. BatchNorm은 "
        "통계를 낼 예제가 너무 적은 왼쪽에서 떨어지고, 예제 하나하나를 따로 정규화하는 "
        "GroupNorm과 LayerNorm은 높이를 유지합니다.",
    },
    "batch-size.note_model": {
        "en": "Data: {data}. Model: 3 x [Conv(k=3) -> norm -> ReLU -> MaxPool(2)] with 32 "
        "channels, then a classifier head Linear -> norm -> ReLU -> Linear with {head} hidden "
        "features; GroupNorm uses 8 groups, LayerNorm normalises over (C, L) in the "
        "convolutions and over the features in the head, InstanceNorm is affine and the "
        "InstanceNorm network has no normalization in the head.",
        "ko": "데이터: {data}. 모델: [Conv(k=3) -> 정규화 -> ReLU -> MaxPool(2)] x 3(채널 "
        "32개) 뒤에 은닉 {head}개짜리 분류 헤드 Linear -> 정규화 -> ReLU -> Linear. "
        "GroupNorm은 그룹 8개, LayerNorm은 합성곱에서는 (C, L) 전체를, 헤드에서는 특성 "
        "전체를 정규화합니다. InstanceNorm은 affine을 켜고, 그 네트워크의 헤드에는 정규화를 "
        "넣지 않았습니다.",
    },
    "batch-size.note_budget": {
        "en": "Every run sees {examples} training examples: batch B makes {steps} x 32 / B "
        "updates with lr {lr} x B / 32 (SGD, momentum {momentum}, cosine decay). Test accuracy "
        "in eval mode (running statistics).",
        "ko": "모든 학습은 예제 {examples}개를 봅니다. 배치 B는 {steps} x 32 / B번 갱신하고 "
        "학습률은 {lr} x B / 32입니다(SGD, 모멘텀 {momentum}, 코사인 감쇠). 테스트 정확도는 "
        "eval 모드(running 통계)로 쟀습니다.",
    },
    "batch-size.note_head": {
        "en": "In the head a BatchNorm's statistics per feature come from the B examples of "
        "the batch alone (in the convolutions from B x positions values): at batch 2 it maps "
        "each feature to about -1 or +1, depending on the other example in the batch.",
        "ko": "헤드의 BatchNorm은 특성마다 배치의 예제 B개만으로 통계를 냅니다(합성곱에서는 "
        "B x 위치 수만큼의 값). 배치가 2면 각 특성을 같은 배치의 다른 예제에 따라 대략 -1 "
        "또는 +1로 바꿔 버립니다.",
    },
    "batch-size.note_diagnosis": {
        "en": "{norm} at batch {batch}: train mode (statistics of {batch} test examples) "
        "{train_acc}, eval mode after recalibration (exact population statistics) {recal}.",
        "ko": "배치 {batch}의 {norm}: train 모드(테스트 예제 {batch}개의 통계) {train_acc}, "
        "재보정(정확한 모집단 통계) 후 eval 모드 {recal}.",
    },
    "batch-size.note_seed": {
        "en": "One seed per cell: differences of a point or two are within run-to-run noise.",
        "ko": "칸마다 시드 하나입니다. 1~2%p 차이는 실행마다 생기는 잡음 안에 있습니다.",
    },
    # ------------------------------------------------------------------ affine
    "affine.title": {
        "en": "BatchNorm's scale and shift: with and without learnable gamma and beta",
        "ko": "BatchNorm의 스케일과 시프트: 학습되는 감마·베타가 있을 때와 없을 때",
    },
    "affine.learnable": {"en": "learnable γ, β (from 1, 0)", "ko": "학습되는 γ, β (1, 0에서 시작)"},
    "affine.no_affine": {"en": "no γ, β (affine=False)", "ko": "γ, β 없음 (affine=False)"},
    "affine.gamma0": {"en": "learnable, from γ=0, β=1", "ko": "학습됨, γ=0, β=1에서 시작"},
    "affine.fixed0": {"en": "γ fixed at 0", "ko": "γ를 0으로 고정"},
    "affine.headline": {
        "en": "test accuracy after {steps} steps: learnable γ, β {learnable}, no γ, β "
        "{no_affine}, learnable from γ=0, β=1 {gamma0}, γ fixed at 0 {fixed0}; the learned γ "
        "moved {gamma_moved} from 1 and β {beta_moved} from 0 on average (layers 1 / 2 / 3)",
        "ko": "{steps}스텝 뒤 테스트 정확도: 학습되는 γ, β {learnable}, γ, β 없음 "
        "{no_affine}, γ=0, β=1에서 시작 {gamma0}, γ를 0으로 고정 {fixed0}; 학습된 γ는 1에서 "
        "평균 {gamma_moved}, β는 0에서 평균 {beta_moved}만큼 움직임 (1 / 2 / 3층)",
    },
    "affine.col_gamma": {"en": "mean |γ − 1| per layer", "ko": "층별 평균 |γ − 1|"},
    "affine.col_beta": {"en": "mean |β| per layer", "ko": "층별 평균 |β|"},
    "affine.caption": {
        "en": "(a) test accuracy during training for the four configurations of γ and β; "
        "(b, c) the learned γ and β of each BatchNorm layer after training: median over the "
        "layer's 100 units, shaded from the 15th to the 85th percentile.",
        "ko": "(a) γ와 β의 네 가지 구성에서 학습 중 테스트 정확도. (b, c) 학습을 마친 뒤 각 "
        "BatchNorm 층의 γ와 β: 층의 유닛 100개에 대한 중앙값, 음영은 15~85 백분위수.",
    },
    "affine.explanation": {
        "en": "Panel (a) compares how well the network learns in each configuration; a curve "
        "stuck at about 10% is guessing. Panels (b) and (c) show where γ and β ended up, "
        "layer by layer; the dotted line is where every framework starts them (γ = 1, "
        "β = 0). Distance from that line is what the network chose to undo or add to the "
        "plain normalization.",
        "ko": "(a)는 구성마다 네트워크가 얼마나 잘 배우는지 비교합니다. 10% 근처에 머문 "
        "곡선은 찍고 있는 것입니다. (b)와 (c)는 γ와 β가 층마다 어디에 자리 잡았는지 "
        "보여 줍니다. 점선은 모든 프레임워크가 쓰는 시작값(γ = 1, β = 0)이고, 이 선에서 "
        "떨어진 만큼이 네트워크가 단순한 정규화를 스스로 고쳐 쓴 정도입니다.",
    },
    "affine.note_model": {
        "en": "Data: {data}. Model: MLP {inputs}-100-100-100-{classes}, Linear -> BatchNorm "
        "-> sigmoid, plain SGD lr {lr}, batch {batch}; all four networks start from the same "
        "Linear weights and see the same mini-batches.",
        "ko": "데이터: {data}. 모델: MLP {inputs}-100-100-100-{classes}, Linear -> "
        "BatchNorm -> 시그모이드, 모멘텀 없는 SGD(lr {lr}), 배치 {batch}. 네 네트워크 모두 "
        "같은 Linear 가중치에서 출발해 같은 미니배치를 봅니다.",
    },
    "affine.note_gamma0": {
        "en": "With γ = 0 everywhere training cannot start: a BN layer with γ = 0 outputs β for "
        "every example, so the next layer sees the same input across the batch, normalizes it "
        "to 0 and its γ gets no gradient (dγ = Σ g·x̂); the gradient sent down through a layer "
        "is multiplied by its γ, so the first layer's γ gets none either. Every γ stays 0: "
        "learned from 0 or held there, the numbers are the same.",
        "ko": "모든 층의 γ가 0이면 학습이 시작되지 못합니다. γ = 0인 BN 층은 모든 예제에 "
        "β만 내보내므로 다음 층은 배치 전체에서 같은 입력을 받고, 이를 정규화하면 0이 되어 그 "
        "층의 γ에는 기울기가 생기지 않습니다(dγ = Σ g·x̂). 아래로 내려가는 기울기에도 그 층의 "
        "γ가 곱해지므로 첫 층의 γ도 기울기를 받지 못합니다. 결국 모든 γ가 0에 머물러, 0에서 "
        "학습을 시작하든 0에 고정하든 결과가 똑같습니다.",
    },
    "affine.note_residual": {
        "en": "γ = 0 at the start is a deliberate trick only in residual networks, for the last "
        "BN of each residual branch (Goyal et al. 2017): there the identity path still carries "
        "the signal, so each block starts as the identity.",
        "ko": "γ를 0으로 시작하는 것이 일부러 쓰는 요령인 곳은 잔차 네트워크뿐입니다. 각 잔차 "
        "가지의 마지막 BN에만 씁니다(Goyal 외 2017). 그곳에서는 항등 경로가 신호를 계속 "
        "전달하므로 각 블록이 항등 함수로 출발하게 됩니다.",
    },
    "affine.panel_accuracy": {"en": "(a) test accuracy", "ko": "(a) 테스트 정확도"},
    "affine.panel_gamma": {
        "en": "({letter}) learned γ per layer",
        "ko": "({letter}) 층별로 학습된 γ",
    },
    "affine.panel_beta": {
        "en": "({letter}) learned β per layer",
        "ko": "({letter}) 층별로 학습된 β",
    },
    "affine.layer": {"en": "BatchNorm layer", "ko": "BatchNorm 층"},
    "affine.gamma_axis": {
        "en": "γ (median, 15-85th percentiles)",
        "ko": "γ (중앙값, 15~85 백분위수)",
    },
    "affine.beta_axis": {
        "en": "β (median, 15-85th percentiles)",
        "ko": "β (중앙값, 15~85 백분위수)",
    },
    "affine.start": {"en": "framework start: {value}", "ko": "프레임워크 시작값: {value}"},
    "affine.suptitle": {
        "en": "MLP 3x100 sigmoid with BatchNorm on {dataset}",
        "ko": "{dataset} 데이터, BatchNorm을 넣은 3x100 시그모이드 MLP",
    },
    # ------------------------------------------------------------------ inference-stats
    "inference-stats.title": {
        "en": "Statistics for inference: moving averages, every batch's statistics, the "
        "cumulative average, recalibration",
        "ko": "추론에 쓸 통계: 이동 평균, 모든 배치의 통계, 누적 평균, 재보정",
    },
    "inference-stats.moving": {
        "en": "moving average, momentum {momentum}",
        "ko": "이동 평균, momentum {momentum}",
    },
    "inference-stats.every": {
        "en": "every batch's statistics, averaged",
        "ko": "모든 배치의 통계를 저장해 평균",
    },
    "inference-stats.cumulative": {
        "en": "cumulative average (momentum=None)",
        "ko": "누적 평균 (momentum=None)",
    },
    "inference-stats.recal": {"en": "recalibrated after training", "ko": "학습 후 재보정"},
    "inference-stats.stores_moving": {"en": "2 vectors per layer", "ko": "층마다 벡터 2개"},
    "inference-stats.stores_every": {
        "en": "2 vectors per layer per step",
        "ko": "층마다, 스텝마다 벡터 2개",
    },
    "inference-stats.stores_cumulative": {"en": "2 vectors per layer", "ko": "층마다 벡터 2개"},
    "inference-stats.stores_recal": {
        "en": "2 vectors per layer (+ a pass over the training set)",
        "ko": "층마다 벡터 2개 (+ 학습 세트 한 바퀴)",
    },
    "inference-stats.headline": {
        "en": "after {steps} steps at batch {batch}: every batch's statistics averaged "
        "{every} ({every_memory} stored), exactly the cumulative average (momentum=None) "
        "{cumulative} ({cumulative_memory}); moving averages, momentum {moving}; recalibrated "
        "{recal}",
        "ko": "배치 {batch}로 {steps}스텝 학습한 뒤: 모든 배치의 통계를 저장해 평균 {every} "
        "(저장량 {every_memory}), 누적 평균(momentum=None)과 정확히 같음 {cumulative} "
        "({cumulative_memory}); 이동 평균 momentum별 {moving}; 재보정 {recal}",
    },
    "inference-stats.col_estimator": {
        "en": "statistics used at test time",
        "ko": "테스트 때 쓰는 통계",
    },
    "inference-stats.col_stores": {"en": "what is kept", "ko": "저장하는 것"},
    "inference-stats.col_values": {"en": "values stored", "ko": "저장 값 개수"},
    "inference-stats.col_memory": {"en": "memory (float32)", "ko": "메모리 (float32)"},
    "inference-stats.caption": {
        "en": "(a) test accuracy of one and the same trained CNN with each kind of stored "
        "statistics, at each evaluation during training; (b) accuracy at the end against the "
        "memory the statistics take (log scale).",
        "ko": "(a) 똑같이 학습된 CNN 하나를 저장 통계의 종류만 바꿔 가며 학습 중 평가한 테스트 "
        "정확도. (b) 마지막 정확도와 그 통계가 차지하는 메모리(로그 축).",
    },
    "inference-stats.explanation": {
        "en": "All lines come from the same weights, so they differ only in the mean and "
        "variance each BatchNorm layer uses at test time. In (a), a line that lags below the "
        "others is using statistics of an older network; the dashed and dotted lines (every "
        "batch averaged, cumulative average) lie on top of each other. In (b), further right "
        "means more memory: storing every batch costs thousands of times more and buys "
        "nothing.",
        "ko": "모든 선은 같은 가중치에서 나왔으므로, 차이는 오직 테스트 때 각 BatchNorm 층이 "
        "쓰는 평균과 분산에서 옵니다. (a)에서 다른 선보다 뒤처지는 선은 예전 네트워크의 "
        "통계를 쓰고 있는 것입니다. 파선(모든 배치 평균)과 점선(누적 평균)은 서로 겹칩니다. "
        "(b)에서 오른쪽일수록 메모리를 더 씁니다. 모든 배치를 저장하면 수천 배의 메모리를 "
        "쓰지만 얻는 것은 없습니다.",
    },
    "inference-stats.note_model": {
        "en": "Data: {data}. Model: the 3-block CNN with BatchNorm; SGD lr {lr}, momentum "
        "{momentum}, constant rate, batch {batch}.",
        "ko": "데이터: {data}. 모델: BatchNorm을 넣은 3블록 CNN. SGD lr {lr}, 모멘텀 "
        "{momentum}, 고정 학습률, 배치 {batch}.",
    },
    "inference-stats.note_same_training": {
        "en": "One training run: a forward pre-hook on every BatchNorm layer feeds each batch's "
        "per-channel mean and unbiased variance to every estimator; at each evaluation a copy "
        "of the network gets each estimator's statistics in its BN buffers.",
        "ko": "학습은 한 번만 합니다. 각 BatchNorm 층의 forward pre-hook이 배치마다 채널별 "
        "평균과 불편 분산을 모든 추정 방식에 넘기고, 평가할 때마다 네트워크 사본의 BN "
        "버퍼에 방식별 통계를 넣어 잽니다.",
    },
    "inference-stats.note_every_is_cumulative": {
        "en": "Averaging every stored batch statistic is exactly what torch's momentum=None "
        "computes on the fly (the k-th batch enters with weight 1/k): same numbers, two "
        "vectors per layer instead of two per layer and step. Both weigh the first batches, "
        "made by weights long gone, as much as the last.",
        "ko": "저장한 배치 통계를 모두 평균하는 것은 torch의 momentum=None이 그때그때 "
        "계산하는 값과 정확히 같습니다(k번째 배치가 가중치 1/k로 들어감). 결과는 같고, 저장은 "
        "스텝마다 벡터 2개가 아니라 층마다 벡터 2개면 됩니다. 둘 다 이미 사라진 가중치가 만든 "
        "초기 배치를 마지막 배치와 똑같은 비중으로 섞습니다.",
    },
    "inference-stats.note_recal": {
        "en": "Recalibrated: normkit.tools.recalibrate (population strategy) on a copy, the "
        "exact mean and unbiased variance over the whole training set with the current "
        "weights (chunks of {chunk}).",
        "ko": "재보정: 사본에 normkit.tools.recalibrate(population 방식)를 적용해, 현재 "
        "가중치로 학습 세트 전체({chunk}개씩 나눠 계산)의 정확한 평균과 불편 분산을 "
        "구했습니다.",
    },
    "inference-stats.panel_time": {
        "en": "(a) the same network, different statistics",
        "ko": "(a) 같은 네트워크, 다른 통계",
    },
    "inference-stats.panel_memory": {
        "en": "(b) accuracy at the end vs memory",
        "ko": "(b) 마지막 정확도와 메모리",
    },
    "inference-stats.memory_axis": {
        "en": "memory of the stored statistics (KiB, log scale)",
        "ko": "저장한 통계의 메모리 (KiB, 로그 축)",
    },
    "inference-stats.suptitle": {
        "en": "CNN with BatchNorm on {dataset}, batch {batch}",
        "ko": "{dataset} 데이터, BatchNorm CNN, 배치 {batch}",
    },
    # ------------------------------------------------------------------ dropout
    "dropout.title": {
        "en": "BatchNorm and dropout: train and test accuracy, and the generalization gap",
        "ko": "BatchNorm과 드롭아웃: 학습·테스트 정확도와 일반화 격차",
    },
    "dropout.none": {"en": "no regularization", "ko": "규제 없음"},
    "dropout.dropout": {"en": "dropout", "ko": "드롭아웃"},
    "dropout.bn": {"en": "BN", "ko": "BN"},
    "dropout.both": {"en": "BN + dropout", "ko": "BN + 드롭아웃"},
    "dropout.headline": {
        "en": "test accuracy and gap (train − test, points), mean of {seeds} seeds: {results}",
        "ko": "테스트 정확도와 격차(학습 − 테스트, %p), 시드 {seeds}개 평균: {results}",
    },
    "dropout.headline_part": {
        "en": "{variant} {test} (gap {gap})",
        "ko": "{variant} {test} (격차 {gap})",
    },
    "dropout.col_train": {"en": "train acc (mean ± sd)", "ko": "학습 정확도 (평균 ± 표준편차)"},
    "dropout.col_test": {"en": "test acc (mean ± sd)", "ko": "테스트 정확도 (평균 ± 표준편차)"},
    "dropout.col_gap": {"en": "gap, points (mean ± sd)", "ko": "격차, %p (평균 ± 표준편차)"},
    "dropout.caption": {
        "en": "(a) test accuracy during training and (b) the generalization gap, training-set "
        "minus test-set accuracy, for an MLP with neither, dropout (p = {p}), BatchNorm, or "
        "both (mean over seeds, shaded: min-max).",
        "ko": "(a) 학습 중 테스트 정확도, (b) 일반화 격차(학습 세트 정확도 − 테스트 세트 "
        "정확도). 아무것도 없는 MLP, 드롭아웃(p = {p}), BatchNorm, 둘 다 쓴 MLP를 "
        "비교합니다(시드 평균, 음영은 최솟값~최댓값).",
    },
    "dropout.explanation": {
        "en": "Panel (a) is what matters in the end: accuracy on examples the network never "
        "trained on. Panel (b) shows how much better the network does on its training set than "
        "on new data; a large gap means it memorizes. A regularizer is worth having if it "
        "lowers the gap without lowering the curve in (a).",
        "ko": "결국 중요한 것은 (a), 네트워크가 학습 때 본 적 없는 예제의 정확도입니다. "
        "(b)는 학습 세트에서의 성적이 새 데이터보다 얼마나 좋은지 보여 줍니다. 격차가 크면 "
        "외우고 있다는 뜻입니다. (a)의 곡선을 낮추지 않으면서 격차를 줄일 때 규제 기법을 쓸 "
        "가치가 있습니다.",
    },
    "dropout.note_model": {
        "en": "Data: {data}. Model: MLP {inputs}-{hidden}-{classes} with ReLU; per hidden "
        "layer Linear -> [BN] -> ReLU -> [Dropout(p = {p})]. The four networks of a seed start "
        "from the same Linear weights and see the same mini-batches.",
        "ko": "데이터: {data}. 모델: ReLU를 쓰는 MLP {inputs}-{hidden}-{classes}, 은닉층마다 "
        "Linear -> [BN] -> ReLU -> [Dropout(p = {p})]. 같은 시드의 네 네트워크는 같은 "
        "Linear 가중치에서 출발해 같은 미니배치를 봅니다.",
    },
    "dropout.note_training": {
        "en": "SGD lr {lr}, momentum {momentum}, cosine decay, batch {batch}, {steps} steps.",
        "ko": "SGD lr {lr}, 모멘텀 {momentum}, 코사인 감쇠, 배치 {batch}, {steps}스텝.",
    },
    "dropout.note_eval": {
        "en": "Both accuracies in eval mode: dropout off, BatchNorm with its running "
        "statistics. The gap uses the whole training set.",
        "ko": "두 정확도 모두 eval 모드로 쟀습니다. 드롭아웃은 꺼지고 BatchNorm은 running "
        "통계를 씁니다. 격차는 학습 세트 전체로 계산했습니다.",
    },
    "dropout.panel_test": {"en": "(a) test accuracy", "ko": "(a) 테스트 정확도"},
    "dropout.panel_gap": {"en": "(b) generalization gap", "ko": "(b) 일반화 격차"},
    "dropout.gap_axis": {"en": "train − test accuracy (points)", "ko": "학습 − 테스트 정확도 (%p)"},
    "dropout.suptitle": {
        "en": "MLP on {dataset}, {seeds} seeds",
        "ko": "{dataset} 데이터의 MLP, 시드 {seeds}개",
    },
    # ------------------------------------------------------------------ sequence
    "sequence.title": {
        "en": "Padded sequences: BatchNorm with and without a mask",
        "ko": "패딩된 시퀀스: 마스크를 쓰는 BatchNorm과 쓰지 않는 BatchNorm",
    },
    "sequence.bn": {"en": "plain BN", "ko": "일반 BN"},
    "sequence.masked": {"en": "masked BN", "ko": "마스크 BN"},
    "sequence.ln": {"en": "LayerNorm", "ko": "LayerNorm"},
    "sequence.none": {"en": "no norm", "ko": "정규화 없음"},
    "sequence.headline": {
        "en": "with {extra} more padded frames per test batch, plain BN's train-mode accuracy "
        "goes from {bn_from} to {bn_to} ({bn_agree} of its predictions unchanged) while masked "
        "BN keeps {masked} ({masked_agree} unchanged); train/eval gap after training: plain BN "
        "{bn_gap} points, masked BN {masked_gap}",
        "ko": "테스트 배치마다 패딩 프레임을 {extra}개 더 붙이면 일반 BN의 train 모드 정확도는 "
        "{bn_from}에서 {bn_to}로 바뀌고(예측의 {bn_agree}만 그대로), 마스크 BN은 {masked}를 "
        "유지합니다(예측의 {masked_agree} 그대로). 학습이 끝난 뒤 train/eval 격차는 일반 BN "
        "{bn_gap}%p, 마스크 BN {masked_gap}%p",
    },
    "sequence.col_variant": {"en": "normalization", "ko": "정규화"},
    "sequence.col_eval": {"en": "eval-mode acc", "ko": "eval 모드 정확도"},
    "sequence.col_train": {"en": "train-mode acc", "ko": "train 모드 정확도"},
    "sequence.col_train_padded": {
        "en": "train-mode acc, +{extra} frames",
        "ko": "train 모드 정확도, 프레임 {extra}개 추가",
    },
    "sequence.col_agree": {
        "en": "same prediction at +{extra} (train mode)",
        "ko": "{extra}개 추가해도 같은 예측 (train 모드)",
    },
    "sequence.col_gap": {"en": "train − eval gap (points)", "ko": "train − eval 격차 (%p)"},
    "sequence.caption": {
        "en": "Test accuracy of the four networks when every test batch gets 0 to {extra} more "
        "padded frames, (a) in eval mode and (b) in train mode; (c) train-mode minus eval-mode "
        "test accuracy during training.",
        "ko": "테스트 배치마다 패딩 프레임을 0~{extra}개 더 붙였을 때 네 네트워크의 테스트 "
        "정확도. (a) eval 모드, (b) train 모드. (c) 학습 중 train 모드 정확도에서 eval 모드 "
        "정확도를 뺀 값.",
    },
    "sequence.explanation": {
        "en": "The test sequences and their batch-mates are the same at every point of (a) "
        "and (b); only the amount of zero padding after them changes, so a line that is not "
        "flat belongs to a network whose predictions depend on padding. Panel (b) uses each "
        "test batch's own statistics, as training does: there plain BN's statistics fill up "
        "with padded frames. Panel (c) shows how far the network that training optimized "
        "(train mode) is from the one that is deployed (eval mode).",
        "ko": "(a)와 (b)의 모든 점에서 테스트 시퀀스와 함께 배치된 시퀀스는 같고, 뒤에 붙는 "
        "0 패딩의 양만 다릅니다. 그러니 선이 평평하지 않으면 그 네트워크의 예측이 패딩에 "
        "따라 달라진다는 뜻입니다. (b)는 학습 때처럼 각 테스트 배치의 통계를 씁니다. 여기서 "
        "일반 BN의 통계에는 패딩 프레임이 점점 더 많이 섞입니다. (c)는 학습이 최적화한 "
        "네트워크(train 모드)와 실제로 쓰는 네트워크(eval 모드)가 얼마나 다른지 보여 줍니다.",
    },
    "sequence.note_shows": {
        "en": "A plain BatchNorm counts padded frames in its statistics, so the same sequence "
        "is normalized differently depending on how much padding its batch carries, and the "
        "running statistics average over batches of varying padding. A masked BatchNorm "
        "takes its statistics from the valid frames only: the network's predictions do not "
        "depend on the padding at all.",
        "ko": "일반 BatchNorm은 패딩 프레임까지 통계에 넣기 때문에, 같은 시퀀스라도 배치에 "
        "패딩이 얼마나 있느냐에 따라 다르게 정규화되고 running 통계도 패딩 양이 제각각인 "
        "배치들의 평균이 됩니다. 마스크 BatchNorm은 유효한 프레임만으로 통계를 내므로 "
        "네트워크의 예측이 패딩과 전혀 상관없습니다.",
    },
    "sequence.note_model": {
        "en": "Data: {data}; each sequence cropped once to a random window of {min_length} "
        "frames or more, zero-padded. Model: 3 x [Conv1d(k={kernel}, dilation 1/2/4, "
        "{channels} channels) -> norm -> ReLU -> padded frames set to 0] -> mean over the "
        "valid frames -> Linear. LayerNorm normalizes the channels of each frame.",
        "ko": "데이터: {data}. 시퀀스마다 {min_length}프레임 이상의 무작위 구간을 한 번 잘라 "
        "내고 0으로 패딩했습니다. 모델: 3 x [Conv1d(k={kernel}, dilation 1/2/4, 채널 "
        "{channels}개) -> 정규화 -> ReLU -> 패딩 프레임을 0으로] -> 유효 프레임 평균 -> "
        "Linear. LayerNorm은 프레임마다 채널 방향으로 정규화합니다.",
    },
    "sequence.note_training": {
        "en": "SGD lr {lr}, momentum {momentum}, cosine decay, batch {batch} padded to its "
        "longest sequence, {steps} steps; the four networks start from the same convolution "
        "weights and see the same batches.",
        "ko": "SGD lr {lr}, 모멘텀 {momentum}, 코사인 감쇠, 배치 {batch}(배치에서 가장 긴 "
        "시퀀스 길이에 맞춰 패딩), {steps}스텝. 네 네트워크는 같은 합성곱 가중치에서 출발해 "
        "같은 배치를 봅니다.",
    },
    "sequence.note_agreement": {
        "en": "Train mode: a copy of the network normalizes each test batch of {batch} with "
        "that batch's statistics. The padding sweep uses the first {used} test sequences, in "
        "the same batches of {batch} at every amount of padding; 'same prediction' is the "
        "fraction of them whose predicted class with {extra} extra padded frames equals the "
        "one without.",
        "ko": "train 모드: 네트워크 사본이 테스트 예제 {batch}개씩 묶은 배치를 그 배치의 "
        "통계로 정규화합니다. 패딩 비교에는 테스트 시퀀스 앞쪽 {used}개를 쓰며, 패딩 양이 "
        "달라도 {batch}개씩 묶는 배치 구성은 같습니다. '같은 예측'은 이 가운데 패딩 "
        "프레임을 {extra}개 더 붙였을 때의 예측 클래스가 붙이지 않았을 때와 같은 시퀀스의 "
        "비율입니다.",
    },
    "sequence.panel_eval": {
        "en": "(a) eval mode (running statistics)",
        "ko": "(a) eval 모드 (running 통계)",
    },
    "sequence.panel_train": {
        "en": "(b) train mode (batch statistics)",
        "ko": "(b) train 모드 (배치 통계)",
    },
    "sequence.panel_gap": {"en": "(c) train/eval gap", "ko": "(c) train/eval 격차"},
    "sequence.padding_axis": {
        "en": "extra padded frames per test batch",
        "ko": "테스트 배치에 더 붙인 패딩 프레임 수",
    },
    "sequence.gap_axis": {
        "en": "train − eval test accuracy (points)",
        "ko": "train − eval 테스트 정확도 (%p)",
    },
    "sequence.suptitle": {
        "en": "1-D CNN on {dataset} sequences cropped to {low}-{high} frames and padded, "
        "batch {batch}",
        "ko": "{dataset} 시퀀스를 {low}~{high}프레임으로 잘라 패딩한 1-D CNN, 배치 {batch}",
    },
}
