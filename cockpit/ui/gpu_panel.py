"""The GPU panel: each GPU's gauges and history, and the training's CPU and memory."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text

from cockpit.store.samples import GPU_OK, GpuReading, MonitorSample
from cockpit.ui import format as fmt
from cockpit.ui.palette import Palette
from cockpit.ui.panel import ValuePanel, fit_lines, hard_wrap, palette_of, text_line
from cockpit.ui.plot import Axis, Series, bar, chart, sparkline
from cockpit.views.readmodel import GpuHistory


class GpuPanel(ValuePanel):
    """Each GPU's utilisation, memory, temperature and power with a short history, and the
    training's CPU and memory. View: (GpuHistory, engine running)."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        history, running = self.view or (GpuHistory(), False)
        latest = history.latest
        muted = Style(color=palette.muted)
        if latest is None:
            message = (
                "waiting for the first reading"
                if running
                else "no readings: the engine samples the GPUs while it runs"
            )
            return Text(message, style=muted)
        lines: list[Text] = []
        gpu_ok = latest.gpu.state == GPU_OK and bool(latest.gpu.gpus)
        if not gpu_ok:
            word = "no NVIDIA GPU" if latest.gpu.state == "no_gpu" else "GPU readings failed"
            colour = palette.muted if latest.gpu.state == "no_gpu" else palette.error
            lines.append(text_line((word, Style(bold=True, color=colour))))
            detail = (latest.gpu.message or "").removeprefix(word).lstrip(":;, ")
            for text in hard_wrap(detail, max(1, width)) if detail else []:
                lines.append(text_line((text, muted)))
            if latest.gpu.state == "no_gpu":
                lines.append(text_line(("training runs on the CPU", muted)))
        else:
            compact = height < 4 * len(latest.gpu.gpus) + 2
            for gpu in latest.gpu.gpus:
                series = _gpu_series(history.samples, gpu.index)
                if compact:
                    lines.append(_gpu_compact(gpu, series, width, palette))
                else:
                    lines.extend(_gpu_block(gpu, series, width, palette))
        lines.append(_process_line(history.samples, width, palette))
        if not running:
            lines.append(text_line(("last readings; the engine is not running", muted)))
        room = height - len(lines)
        if room >= 4:
            if gpu_ok:
                lines.extend(_gpu_history_chart(history.samples, width, room, palette))
            elif any(sample.process is not None for sample in history.samples):
                lines.extend(_cpu_history_chart(history.samples, width, room, palette))
        return fit_lines(lines, width, height)


def _span_labels(samples: Sequence[MonitorSample]) -> tuple[str, str]:
    span = samples[-1].at - samples[0].at if len(samples) > 1 else 0.0
    return f"-{fmt.clock(span)}", "now"


def _gpu_history_chart(
    samples: Sequence[MonitorSample], width: int, height: int, palette: Palette
) -> list[Text]:
    """Utilisation and memory of every GPU over the samples kept, as a braille chart."""
    utilisation: list[Series] = []
    memory: list[Series] = []
    indices = sorted({gpu.index for sample in samples for gpu in sample.gpu.gpus})
    for index in indices:
        series = _gpu_series(samples, index)
        utilisation.append(
            Series(
                [(float(i), v) for i, v in enumerate(series["util"]) if v is not None],
                Style(color=palette.running),
            )
        )
        memory.append(
            Series(
                [(float(i), v) for i, v in enumerate(series["memory"]) if v is not None],
                Style(color=palette.accent),
            )
        )
    legend = text_line(
        ("━ ", Style(color=palette.running, bold=True)),
        ("util  ", Style(color=palette.muted)),
        ("━ ", Style(color=palette.accent, bold=True)),
        ("memory", Style(color=palette.muted)),
    )
    lines = chart(
        [*memory, *utilisation],
        width,
        height - 1,
        x_axis=Axis(0.0, float(max(1, len(samples) - 1))),
        y_axis=Axis(0.0, 100.0),
        y_format=lambda value: f"{value:.0f}%",
        x_labels=_span_labels(samples),
        axis_style=Style(color=palette.muted),
    )
    return [legend, *lines]


def _cpu_history_chart(
    samples: Sequence[MonitorSample], width: int, height: int, palette: Palette
) -> list[Text]:
    """The training's CPU use over the samples kept (percent of one core), as a chart."""
    points = [
        (float(i), s.process.cpu_percent)
        for i, s in enumerate(samples)
        if s.process is not None and s.process.cpu_percent is not None
    ]
    top = max([100.0, *(value for _, value in points)])
    legend = text_line(
        ("━ ", Style(color=palette.accent, bold=True)),
        ("training CPU, % of one core", Style(color=palette.muted)),
    )
    lines = chart(
        [Series(points, Style(color=palette.accent))],
        width,
        height - 1,
        x_axis=Axis(0.0, float(max(1, len(samples) - 1))),
        y_axis=Axis(0.0, top),
        y_format=lambda value: f"{value:.0f}%",
        x_labels=_span_labels(samples),
        axis_style=Style(color=palette.muted),
    )
    return [legend, *lines]


def _gpu_series(samples: Sequence[MonitorSample], index: int) -> dict[str, list[float | None]]:
    series: dict[str, list[float | None]] = {"util": [], "memory": [], "power": []}
    for sample in samples:
        reading = next((g for g in sample.gpu.gpus if g.index == index), None)
        series["util"].append(None if reading is None else reading.utilization_percent)
        memory = None
        if reading and reading.memory_used_mb is not None and reading.memory_total_mb:
            memory = 100.0 * reading.memory_used_mb / reading.memory_total_mb
        series["memory"].append(memory)
        series["power"].append(None if reading is None else reading.power_w)
    return series


def _gauge(
    label: str,
    fraction: float | None,
    value: str,
    history: Sequence[float | None],
    low: float,
    high: float,
    width: int,
    colour: str,
    palette: Palette,
) -> Text:
    spark_width = max(0, min(24, (width - 8) // 3))
    gauge_width = max(4, width - 8 - len(value) - 2 - spark_width - 1)
    filled, empty = bar(fraction, gauge_width)
    line = text_line((f" {label:<5} ", Style(color=palette.muted)))
    line.append(filled, Style(color=colour))
    line.append(empty, Style(bgcolor=palette.surface))
    line.append(f" {value}")
    if spark_width:
        line.append(" " + sparkline(history, spark_width, low=low, high=high), Style(color=colour))
    return line


def _heat(value: float | None, warm: float, hot: float, palette: Palette) -> str:
    if value is None:
        return palette.muted
    if value >= hot:
        return palette.error
    if value >= warm:
        return palette.warning
    return palette.success


def _gpu_block(
    gpu: GpuReading, series: dict[str, list[float | None]], width: int, palette: Palette
) -> list[Text]:
    name = gpu.name.removeprefix("NVIDIA ").strip() or gpu.name
    util = gpu.utilization_percent
    used, total = gpu.memory_used_mb, gpu.memory_total_mb
    memory_fraction = None if used is None or not total else used / total
    power_fraction = (
        None if gpu.power_w is None or not gpu.power_limit_w else gpu.power_w / gpu.power_limit_w
    )
    temperature = "N/A" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C"
    header = text_line(
        (f"GPU{gpu.index} ", Style(bold=True, color=palette.primary)),
        (name, Style(bold=True)),
        ("  ", ""),
        (temperature, Style(color=_heat(gpu.temperature_c, 75, 85, palette), bold=True)),
    )
    memory_text = f"{fmt.memory(used)}/{fmt.memory(total)}" if used is not None or total else "N/A"
    power_text = "N/A"
    if gpu.power_w is not None:
        power_text = f"{gpu.power_w:.0f}" + (
            f"/{gpu.power_limit_w:.0f} W" if gpu.power_limit_w else " W"
        )
    power_high = gpu.power_limit_w or max(
        [value for value in series["power"] if value is not None] or [1.0]
    )
    return [
        header,
        _gauge(
            "util",
            None if util is None else util / 100,
            fmt.percent(util).rjust(4),
            series["util"],
            0,
            100,
            width,
            _heat(util, 101, 101, palette) if util is not None else palette.muted,
            palette,
        ),
        _gauge(
            "mem",
            memory_fraction,
            memory_text,
            series["memory"],
            0,
            100,
            width,
            _heat(None if memory_fraction is None else memory_fraction * 100, 85, 95, palette),
            palette,
        ),
        _gauge(
            "power",
            power_fraction,
            power_text,
            series["power"],
            0,
            power_high,
            width,
            palette.accent,
            palette,
        ),
    ]


def _gpu_compact(
    gpu: GpuReading, series: dict[str, list[float | None]], width: int, palette: Palette
) -> Text:
    util = gpu.utilization_percent
    line = text_line((f"GPU{gpu.index} ", Style(bold=True, color=palette.primary)))
    line.append(fmt.percent(util).rjust(4), Style(bold=True))
    used, total = gpu.memory_used_mb, gpu.memory_total_mb
    if used is not None and total:
        line.append(f" {used / 1024:.0f}/{total / 1024:.0f}G")
    if gpu.temperature_c is not None:
        line.append(
            f" {gpu.temperature_c:.0f}°C", Style(color=_heat(gpu.temperature_c, 75, 85, palette))
        )
    if gpu.power_w is not None:
        line.append(f" {gpu.power_w:.0f}W")
    room = width - line.cell_len - 1
    if room > 3:
        line.append(
            " " + sparkline(series["util"], room, low=0, high=100), Style(color=palette.running)
        )
    return line


def _process_line(samples: Sequence[MonitorSample], width: int, palette: Palette) -> Text:
    latest = next((s.process for s in reversed(samples) if s.process is not None), None)
    muted = Style(color=palette.muted)
    line = text_line(("train ", Style(bold=True, color=palette.primary)))
    if latest is None or samples[-1].process is None:
        line.append("no training running", muted)
        return line
    cpu = "N/A" if latest.cpu_percent is None else f"{latest.cpu_percent:.0f}%"
    line.append("CPU ", muted)
    line.append(cpu, Style(bold=True))
    line.append("  RSS ", muted)
    line.append(fmt.memory(latest.rss_mb), Style(bold=True))
    line.append(f"  {latest.pids} proc", muted)
    history = [s.process.cpu_percent if s.process else None for s in samples]
    known = [value for value in history if value is not None]
    room = min(32, width - line.cell_len - 1)
    if known and room > 3:
        line.append(
            " " + sparkline(history, room, low=0, high=max(100.0, *known)),
            Style(color=palette.accent),
        )
    return line
