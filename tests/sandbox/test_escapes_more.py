"""More escape attempts, several per technique class, on the harness of test_escapes_sample.

Each case runs in a fresh child interpreter with canary file, canary TCP port and secret
environment variable, and must end in the documented error with no side effect.
"""

from __future__ import annotations

import pytest
from test_escapes_sample import (
    BLOCKED,
    RESOURCE,
    TIMEOUT,
    VIOLATION,
    _params,
    _timeout_mark,
)

DUNDER = [
    ("class_of_tuple", "return ().__class__", VIOLATION),
    ("mro_walk", 'return "".__class__.__mro__[1].__subclasses__()', VIOLATION),
    ("mro_method", "return str.mro()", VIOLATION),
    ("helper_dict", "return time.__dict__", VIOLATION),
    ("helper_class", "return redis.__class__", VIOLATION),
    ("loads_globals", 'return json.loads.__globals__["sys"]', VIOLATION),
    ("lambda_globals", "f = lambda: 1\nreturn f.__globals__", VIOLATION),
    ("builtins_name", 'return __builtins__["open"](canary).read()', VIOLATION),
    ("fullwidth_underscore", "return ().\uff3f\uff3fclass\uff3f\uff3f", VIOLATION),
]

FRAMES = [
    ("gi_code", "def g():\n    yield 1\nreturn g().gi_code", VIOLATION),
    ("gi_yieldfrom", "def g():\n    yield 1\nreturn g().gi_yieldfrom", VIOLATION),
    ("exception_traceback_attr", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return e.__traceback__", VIOLATION),
    ("tb_next_chain", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    t = e.with_traceback(None)\n    return t", VIOLATION),
    ("f_back_on_anything", "x = 1\nreturn x.f_back", VIOLATION),
    ("attribute_error_obj", 'try:\n    redis.nothing\nexcept Exception as e:\n    return e.obj', VIOLATION),
]

FORMAT = [
    ("format_map_dunder", 'return "{a.__class__}".format_map({"a": 1})', VIOLATION),
    ("unbound_str_format", 'return str.format("{0.__class__.__mro__}", 1)', VIOLATION),
    ("format_gen_frame", 'def g():\n    yield 1\nreturn "{0.gi_frame.f_globals}".format(g())', VIOLATION),
    ("fstring_attr", 'return f"{json.dumps.__globals__}"', VIOLATION),
    ("format_via_variable", 'fmt = "{0." + "_" * 2 + "class" + "_" * 2 + "}"\nreturn fmt.format(1)', VIOLATION),
    ("format_swallowed", 'try:\n    "{0.__class__}".format(1)\nexcept Exception:\n    pass\nreturn 1', VIOLATION),
]

BUILTINS = [
    ("compile_builtin", 'return compile("1", "x", "eval")', VIOLATION),
    ("vars_builtin", "return vars()", VIOLATION),
    ("dir_builtin", "return dir(json)", VIOLATION),
    ("getattr_builtin", 'return getattr(json, "_" + "_dict__")', VIOLATION),
    ("setattr_builtin", 'setattr(json, "dumps", 1)\nreturn 1', VIOLATION),
    ("object_subclasses", "return object", VIOLATION),
    ("super_builtin", "return super()", VIOLATION),
    ("breakpoint_builtin", "breakpoint()\nreturn 1", VIOLATION),
    ("memoryview_builtin", 'return memoryview(b"x")', VIOLATION),
    ("type_one_arg", "return type(1)", VIOLATION),
    ("exit_builtin", "exit(3)", VIOLATION),
]

IMPORTS = [
    ("from_import", "from os import environ\nreturn environ", VIOLATION),
    ("import_sys", "import sys\nreturn sys.modules", VIOLATION),
    ("import_alias_hides_helper", "import json as time\nreturn time", VIOLATION),
    ("import_private_name", "from json import _default_decoder\nreturn 1", VIOLATION),
    ("import_star", "from collections import *\nreturn 1", VIOLATION),
    ("import_module_attr", "import collections\nreturn collections.abc", VIOLATION),
    ("importlib", "import importlib\nreturn importlib.import_module('os')", VIOLATION),
    ("import_in_lambda_dead_code", "f = lambda: __import__('os')\nreturn 1", VIOLATION),
]

LOAD_TIME = [
    ("default_argument_runs_at_load",
     "def attack(canary, pwned, port, tmp, x=redis.from_url(event_bus).publish('c', 'm')):\n    return 1",
     VIOLATION),
    ("decorator_runs_at_load", "@json.loads\ndef attack(canary, pwned, port, tmp):\n    return 1", VIOLATION),
    ("class_body_runs_at_load",
     "class C:\n    x = json.dumps(1)\ndef attack(canary, pwned, port, tmp):\n    return 1", VIOLATION),
    ("top_level_call", "json.dumps(1)\ndef attack(canary, pwned, port, tmp):\n    return 1", VIOLATION),
    ("top_level_loop", "for i in range(3):\n    pass\ndef attack(canary, pwned, port, tmp):\n    return 1", VIOLATION),
]

REDIS = [
    ("execute_command", 'return redis.from_url(event_bus).execute_command("CONFIG", "GET", "*")', BLOCKED),
    ("flushall", "return redis.from_url(event_bus).flushall()", BLOCKED),
    ("config_set", 'return redis.from_url(event_bus).config_set("dir", tmp)', BLOCKED),
    ("eval_lua", 'return redis.from_url(event_bus).eval("return 1", 0)', BLOCKED),
    ("shutdown", "return redis.from_url(event_bus).shutdown()", BLOCKED),
    ("client_class", 'return redis.Redis(host="127.0.0.1", port=port)', BLOCKED),
    ("pubsub_connection", "return redis.from_url(event_bus).pubsub().connection", BLOCKED),
    ("pipeline_execute_command", 'return redis.from_url(event_bus).pipeline().execute_command("FLUSHALL")', BLOCKED),
    ("url_with_other_port", 'return redis.from_url("redis://127.0.0.1:" + str(port))', BLOCKED),
    ("non_string_url", "return redis.from_url(None)", BLOCKED),
]

SQL = [
    ("pragma", 'return query("PRAGMA database_list")', BLOCKED),
    ("vacuum_into", 'execute("VACUUM INTO ?", pwned)\nreturn 1', BLOCKED),
    ("create_table", 'execute("CREATE TABLE evil(x)")\nreturn 1', BLOCKED),
    ("two_statements", 'execute("DELETE FROM event_store; ATTACH DATABASE \'" + pwned + "\' AS p")\nreturn 1', BLOCKED),
    ("sqlite_master_write", 'execute("UPDATE sqlite_master SET sql = \'x\'")\nreturn 1', BLOCKED),
]

TRICKS = [
    ("keyboard_interrupt", "raise KeyboardInterrupt()", VIOLATION),
    ("base_exception_catch", "try:\n    return 1\nexcept BaseException:\n    return 2", VIOLATION),
    ("global_statement", "global json\njson = 1\nreturn 1", VIOLATION),
    ("rebind_helper", "json = 5\nreturn json", VIOLATION),
    ("poison_alias", "j = time\nj.sleep = None\nreturn 1", VIOLATION),
    ("delete_helper_attr", "del json.dumps\nreturn 1", VIOLATION),
    ("poison_function_attr", "json.dumps.evil = 1\nreturn 1", VIOLATION),
    ("return_in_finally", "try:\n    return 1\nfinally:\n    return 2", VIOLATION),
    ("except_expression", "try:\n    return 1\nexcept (lambda: Exception)():\n    return 2", VIOLATION),
    ("except_rebound_name", "ValueError = 5\ntry:\n    return 1\nexcept ValueError:\n    return 2", VIOLATION),
    ("async_def", "async def f():\n    return 1\nreturn f()", VIOLATION),
    ("class_with_special_method", "class A:\n    def __eq__(self, o):\n        return True\nreturn A()", VIOLATION),
    ("super_outside_method", "return super()", VIOLATION),
    ("super_with_args", "class A(Exception):\n    def m(self):\n        return super(A, self)\nreturn A().m()", VIOLATION),
    ("class_base_helper", "class A(json.JSONDecodeError):\n    pass\nreturn A", VIOLATION),
    ("bytes_proxy_private", "return bytes._real", VIOLATION),
    ("class_with_base", "class A(dict):\n    pass\nreturn A()", VIOLATION),
    ("print_flood", "for i in range(100000):\n    print('x' * 1000)\nraise ValueError('done')", BLOCKED),
]

UNICODE = [
    ("fullwidth_exec", '\uff45\uff58\uff45\uff43("1")\nreturn 1', VIOLATION),
    ("math_italic_eval", 'return \U0001d452\U0001d463\U0001d44e\U0001d459("1")', VIOLATION),
    ("script_globals", "return \U0001d4f0\U0001d4f5\U0001d4f8\U0001d4eb\U0001d4ea\U0001d4f5\U0001d4fc()", VIOLATION),
]

TIMEOUTS = [
    ("catch_exception_in_loop", "while True:\n    try:\n        while True:\n            pass\n    except Exception:\n        pass", TIMEOUT),
    ("bare_except_in_loop", "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass", TIMEOUT),
    ("finally_loops_again", "while True:\n    try:\n        while True:\n            pass\n    finally:\n        x = 1", TIMEOUT),
    ("recursion_caught_loop", "def f(n):\n    return f(n + 1)\nwhile True:\n    try:\n        f(0)\n    except RecursionError:\n        pass", TIMEOUT),
    ("iter_sentinel_in_c", "return sum(iter(int, 1))", RESOURCE),
    ("generator_loop", "def g():\n    while True:\n        yield 1\nfor _ in g():\n    pass", TIMEOUT),
]

MEMORY = [
    ("list_repeat", "return [0] * 10 ** 10", RESOURCE),
    ("bytes_alloc", "return bytes(10 ** 10)", RESOURCE),
    ("bytearray_alloc", "return bytearray(10 ** 10)", RESOURCE),
    ("ljust_width", 'return "a".ljust(10 ** 10)', RESOURCE),
    ("format_width", 'return "{:>10000000000}".format(1)', RESOURCE),
    ("printf_width", 'return "%10000000000d" % 1', RESOURCE),
    ("printf_star_width", 'return "%*d" % (10 ** 10, 1)', RESOURCE),
    ("fstring_dynamic_width", "w = 10 ** 10\nreturn f'{1:>{w}}'", RESOURCE),
    ("shift_bomb", "return 1 << 10 ** 10", RESOURCE),
    ("list_range", "return list(range(10 ** 10))", RESOURCE),
    ("squaring_loop", "x = 10\nfor _ in range(64):\n    x = x * x\nreturn x", RESOURCE),
    ("augmented_squaring", "x = 10\nfor _ in range(64):\n    x *= x\nreturn x", RESOURCE),
    ("builtin_pow", "return pow(10, 10 ** 10)", RESOURCE),
    ("modular_pow_in_c", "return pow(3, 2 ** 100000, 2 ** 200000 + 1)", RESOURCE),
    ("factorial", "return math.factorial(10 ** 8)", RESOURCE),
    ("replace_amplify", 's = "a" * 10000\nreturn s.replace("a", "a" * 100000)', RESOURCE),
    ("join_amplify", 'return ("x" * 1000000).join(["a"] * 1000)', RESOURCE),
    ("json_indent", "return json.dumps([[1]] * 1000, indent=10 ** 9)", RESOURCE),
    ("string_doubling", "s = 'a'\nfor i in range(64):\n    s = s + s\nreturn len(s)", RESOURCE),
]

RECURSION = [
    ("mutual_recursion", "def a(n):\n    return b(n + 1)\ndef b(n):\n    return a(n + 1)\nreturn a(0)", RESOURCE),
    ("lambda_recursion", "f = lambda n: f(n + 1)\nreturn f(0)", RESOURCE),
    ("deep_nesting_repr", "x = []\nfor i in range(1000000):\n    x = [x]\nreturn str(x)", RESOURCE),
]


@pytest.mark.parametrize("src,expect", _params(DUNDER))
def test_dunder(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(FRAMES))
def test_frames(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(FORMAT))
def test_format_walks(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(BUILTINS))
def test_builtins(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(IMPORTS))
def test_imports(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(LOAD_TIME))
def test_nothing_runs_at_load(box, src, expect):
    box.run(src, expect, raw=True)


@pytest.mark.parametrize("src,expect", _params(REDIS))
def test_redis_facade_more(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(SQL))
def test_sql_more(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(TRICKS))
def test_tricks(box, src, expect):
    box.run(src, expect)


@pytest.mark.parametrize("src,expect", _params(UNICODE))
def test_unicode(box, src, expect):
    box.run(src, expect)


@_timeout_mark
@pytest.mark.parametrize("src,expect", _params(TIMEOUTS))
def test_timeouts_more(box, src, expect):
    box.run(src, expect, cpu_probe=True)


@_timeout_mark
@pytest.mark.parametrize("src,expect", _params(MEMORY))
def test_memory_more(box, src, expect):
    box.run(src, expect)


@_timeout_mark
@pytest.mark.parametrize("src,expect", _params(RECURSION))
def test_recursion_more(box, src, expect):
    box.run(src, expect)
