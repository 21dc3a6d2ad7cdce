#!/usr/bin/env python3
"""Render the azflow Helm chart without Helm, for the tests (Helm cannot be installed here).

This is a deliberately small evaluator of the Go-template subset the chart's templates use, and
nothing more: a template that needs anything else fails loudly, so the chart stays simple enough
for this renderer and for a reader.

Supported:
  {{/* comment */}}            {{- ... -}} whitespace trimming, as Go templates do it
  {{ define "name" }}...{{ end }} in _helpers.tpl, and  include "name" .
  {{ if PIPELINE }} ... {{ else }} ... {{ end }}   (Go truthiness: false, 0, "", {}, [], nil)
  .Values.a.b   .Release.Name   .Release.Namespace   .Chart.Name/Version/AppVersion   .
  functions: quote, default, toYaml, indent, nindent, or, and, not
  pipelines:  X | f a b  ==  f a b X

Usage: helm_lite.py CHART_DIR [--set key.path=value ...] [--name NAME] [--namespace NS]
prints the rendered manifests (one YAML stream), as `helm template` would.
"""

import argparse
import json
import os
import re
import sys

import yaml

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


class TemplateError(Exception):
    pass


def tokenize(text):
    """Text and action tokens, with Go's trim markers applied to the neighbouring text."""
    tokens = []
    pos = 0
    for m in ACTION.finditer(text):
        tokens.append(["text", text[pos:m.start()]])
        if m.group(1):
            tokens[-1][1] = tokens[-1][1].rstrip(" \t\r\n")
        tokens.append(["action", m.group(2), bool(m.group(3))])
        pos = m.end()
    tokens.append(["text", text[pos:]])
    # A trailing "-}}" trims the whitespace that starts the next text token.
    for i, tok in enumerate(tokens):
        if tok[0] == "action" and tok[2] and i + 1 < len(tokens):
            tokens[i + 1][1] = tokens[i + 1][1].lstrip(" \t\r\n")
    return [(t[0], t[1]) for t in tokens if not (t[0] == "action" and t[1].startswith("/*"))]


def parse(tokens, i=0, stop=()):
    """A tree: list of ("text", s) | ("expr", s) | ("if", cond, then, else) | ("define", name, body)."""
    out = []
    while i < len(tokens):
        kind, val = tokens[i]
        if kind == "text":
            out.append(("text", val))
            i += 1
            continue
        word = val.split(None, 1)[0] if val else ""
        if word in stop:
            return out, i
        if word == "if":
            then, i = parse(tokens, i + 1, stop=("end", "else"))
            other = []
            if tokens[i][1] == "else":
                other, i = parse(tokens, i + 1, stop=("end",))
            out.append(("if", val[2:].strip(), then, other))
            i += 1
        elif word == "define":
            body, i = parse(tokens, i + 1, stop=("end",))
            out.append(("define", json.loads(val.split(None, 1)[1]), body))
            i += 1
        elif word in ("end", "else"):
            raise TemplateError(f"{{{{ {val} }}}} without its opening action")
        elif word in ("range", "with", "template", "block", "tpl", "break", "continue"):
            raise TemplateError(f"unsupported action {{{{ {val} }}}}: keep the chart's templates simple")
        else:
            out.append(("expr", val))
            i += 1
    if stop:
        raise TemplateError(f"missing {{{{ {stop[0]} }}}}")
    return out, i


def truthy(v):
    return not (v is None or v is False or v == 0 or v == "" or v == {} or v == [])


def to_text(v):
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        raise TemplateError(f"cannot print a {type(v).__name__} without toYaml: {v!r}")
    return str(v)


def to_yaml(v):
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def indent(n, s):
    pad = " " * int(n)
    return "\n".join(pad + line for line in to_text(s).split("\n"))


def split_args(s):
    """Words of one command, keeping quoted strings and (parenthesised) groups whole."""
    words, cur, depth, quote = [], "", 0, False
    for c in s:
        if quote:
            cur += c
            if c == '"' and not cur.endswith('\\"'):
                quote = False
        elif c == '"':
            quote = True
            cur += c
        elif c == "(":
            depth += 1
            cur += c
        elif c == ")":
            depth -= 1
            cur += c
        elif c.isspace() and depth == 0:
            if cur:
                words.append(cur)
            cur = ""
        else:
            cur += c
    if cur:
        words.append(cur)
    return words


class Renderer:
    def __init__(self, chart_dir, values, name, namespace):
        with open(os.path.join(chart_dir, "Chart.yaml")) as f:
            chart = yaml.safe_load(f)
        self.ctx = {
            "Values": values,
            "Release": {"Name": name, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion", "")},
        }
        self.defines = {}
        self.dir = os.path.join(chart_dir, "templates")
        for fname in sorted(os.listdir(self.dir)):
            if fname.endswith(".tpl"):
                with open(os.path.join(self.dir, fname)) as f:
                    tree, _ = parse(tokenize(f.read()))
                for node in tree:
                    if node[0] == "define":
                        self.defines[node[1]] = node[2]

    def term(self, word, dot):
        if word == ".":
            return dot
        if word.startswith("."):
            v = dot
            for part in word[1:].split("."):
                if not isinstance(v, dict):
                    raise TemplateError(f"{word}: {part} of a non-map")
                v = v.get(part)
            return v
        if word.startswith('"'):
            return json.loads(word)
        if word.startswith("(") and word.endswith(")"):
            return self.pipeline(word[1:-1], dot)
        if word in ("true", "false"):
            return word == "true"
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        raise TemplateError(f"unsupported term {word!r}")

    def call(self, words, dot, piped=None, has_piped=False):
        fn, args = words[0], [self.term(w, dot) for w in words[1:]]
        if has_piped:
            args.append(piped)
        if fn.startswith(".") or fn.startswith('"') or fn.startswith("("):
            if len(words) > 1 or has_piped:
                raise TemplateError(f"{' '.join(words)}: a value takes no arguments")
            return self.term(fn, dot)
        if fn == "quote":
            return json.dumps(to_text(args[0]))
        if fn == "default":
            return args[1] if truthy(args[1]) else args[0]
        if fn == "toYaml":
            return to_yaml(args[0])
        if fn == "indent":
            return indent(args[0], args[1])
        if fn == "nindent":
            return "\n" + indent(args[0], args[1])
        if fn == "or":
            return next((a for a in args if truthy(a)), args[-1])
        if fn == "and":
            return next((a for a in args if not truthy(a)), args[-1])
        if fn == "not":
            return not truthy(args[0])
        if fn == "include":
            name, arg = args
            if name not in self.defines:
                raise TemplateError(f"include of undefined template {name!r}")
            return self.render_tree(self.defines[name], arg)
        raise TemplateError(f"unsupported function {fn!r}")

    def pipeline(self, expr, dot):
        cmds = [c.strip() for c in split_pipes(expr)]
        v = self.call(split_args(cmds[0]), dot)
        for c in cmds[1:]:
            v = self.call(split_args(c), dot, v, True)
        return v

    def render_tree(self, tree, dot):
        out = []
        for node in tree:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                out.append(to_text(self.pipeline(node[1], dot)))
            elif node[0] == "if":
                branch = node[2] if truthy(self.pipeline(node[1], dot)) else node[3]
                out.append(self.render_tree(branch, dot))
            elif node[0] == "define":
                pass
        return "".join(out)

    def render(self):
        """{template file name: rendered text} for every .yaml template."""
        docs = {}
        for fname in sorted(os.listdir(self.dir)):
            if fname.endswith((".yaml", ".yml")):
                with open(os.path.join(self.dir, fname)) as f:
                    tree, _ = parse(tokenize(f.read()))
                docs[fname] = self.render_tree(tree, self.ctx)
        return docs


def split_pipes(expr):
    parts, cur, quote, depth = [], "", False, 0
    for c in expr:
        if quote:
            quote = c != '"'
        elif c == '"':
            quote = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += c
    parts.append(cur)
    return parts


def set_value(values, assignment):
    """"a.b=c": --set (the value parsed as YAML, as Helm's --set mostly does); ("a.b", text):
    --set-string (the text as it is)."""
    if isinstance(assignment, tuple):
        path, value = assignment
    else:
        path, raw = assignment.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
    node = values
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def render_chart(chart_dir, sets=(), name="azflow", namespace="azflow"):
    with open(os.path.join(chart_dir, "values.yaml")) as f:
        values = yaml.safe_load(f) or {}
    for s in sets:
        set_value(values, s)
    return Renderer(chart_dir, values, name, namespace).render()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("chart")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML")
    ap.add_argument("--set-string", action="append", default=[], metavar="KEY=TEXT")
    ap.add_argument("--name", default="azflow")
    ap.add_argument("--namespace", default="azflow")
    a = ap.parse_args()
    sets = a.set + [tuple(s.split("=", 1)) for s in a.set_string]
    for fname, text in render_chart(a.chart, sets, a.name, a.namespace).items():
        if text.strip():
            body = text.strip().removeprefix("---").lstrip()
            sys.stdout.write(f"---\n# Source: azflow/templates/{fname}\n{body}\n")


if __name__ == "__main__":
    main()
