"""A flame graph as a self-contained SVG from collapsed stacks (`root;...;leaf` -> samples): the
widths are shares of the samples, the root at the bottom, one `<title>` per frame for hovering."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

WIDTH_PX = 1200
ROW_PX = 16
MIN_PX = 0.5  # narrower frames are left out: invisible, and they bloat the file
CHAR_PX = 7  # a label is drawn when the frame is wide enough for a few characters


@dataclass(slots=True)
class Node:
    samples: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def tree(stacks: dict[tuple[str, ...], int]) -> Node:
    root = Node()
    for frames, count in stacks.items():
        node = root
        node.samples += count
        for frame in frames:
            node = node.children.setdefault(frame, Node())
            node.samples += count
    return root


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _colour(name: str) -> str:
    """Warm colours, stable per function name, as flame graphs are usually drawn."""
    h = sum(ord(c) for c in name)
    return f"rgb({205 + h % 50},{80 + (h * 7) % 130},{40 + (h * 13) % 50})"


@dataclass(frozen=True, slots=True)
class Canvas:
    scale: float  # px per sample
    bottom_px: int  # the lower edge of the root's row


def _frames(node: Node, name: str, x: float, level: int, canvas: Canvas, out: list[str]) -> None:
    width = node.samples * canvas.scale
    if width < MIN_PX:
        return
    if level >= 0:
        y = canvas.bottom_px - (level + 1) * ROW_PX
        out.append(_rect(name, node.samples, x, y, width))
    child_x = x
    for child_name, child in sorted(node.children.items()):
        _frames(child, child_name, child_x, level + 1, canvas, out)
        child_x += child.samples * canvas.scale


def _rect(name: str, samples: int, x: float, y: int, width: float) -> str:
    label = name if len(name) * CHAR_PX <= width else name[: int(width // CHAR_PX) - 2] + ".."
    text = (
        f'<text x="{x + 3:.1f}" y="{y + 12}">{escape(label)}</text>' if width > 3 * CHAR_PX else ""
    )
    return (
        f"<g><title>{escape(name)} ({samples} samples)</title>"
        f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW_PX - 1}" '
        f'fill="{_colour(name)}"/>{text}</g>'
    )


def write_flamegraph(stacks: dict[tuple[str, ...], int], path: Path, *, title: str) -> None:
    """Writes the SVG; an empty profile still gives a valid file that says so."""
    root = tree(stacks)
    height = _depth(root) * ROW_PX + 40
    canvas = Canvas(WIDTH_PX / root.samples if root.samples else 0.0, height - 10)
    out: list[str] = []
    _frames(root, "all", 0.0, -1, canvas, out)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
        f'font-family="monospace" font-size="11"><rect width="100%" height="100%" fill="#fff"/>'
        f'<text x="4" y="16" font-size="14">Flame Graph: {escape(title)}, '
        f"{root.samples} samples</text>"
    )
    path.write_text("\n".join([head, *out, "</svg>"]) + "\n")
