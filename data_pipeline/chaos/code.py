"""A small synthetic source tree per system: one handler per operation, and a deploy manifest per service.

Every application service gets its handler file(s) in its runtime's language (a Spring service and
controller for Java, a gRPC server for Go, Python, Node and C#) and `deploy.yaml` with the
environment it reads (dependency addresses, timeouts, pool sizes, log level). Each handler has the
same shape: an entry log statement, input validation, the first half of its downstream calls, a
"compute" line, the remaining calls, an exit log statement and the return. The log catalogue cites
these lines (`Class#line` for Java), so a log statement in the telemetry can be found in the tree.

A code-level fault replaces one handler's compute line in place (the line count is unchanged) with
a buggy variant — a null dereference, an early return of a wrong value, an error status — and the
fault's stack traces point at that file and line. Configuration faults edit `deploy.yaml`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.chaos.catalogues import describe, subject
from data_pipeline.chaos.systems import Operation, Service, System


@dataclass(frozen=True)
class Location:
    path: str
    """Path relative to the code directory."""
    line: int
    """1-based line number."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class _Handler:
    """Where a handler's statements are, and its buggy variants of the compute line."""

    file: str
    lines: dict[str, int]
    """point ('entry', 'validate', 'compute', 'exit', 'controller', 'call:J') -> 1-based line."""
    bugs: dict[str, str]
    """'exception' | 'wrong_value' | 'error_code' -> replacement text of the compute line."""
    frame: str
    """How the handler appears in a stack frame (qualified name)."""


def _pascal(name: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[-_.]", name) if p and p not in ("ts", "service"))


def _snake(name: str) -> str:
    return name.replace("-", "_")


class CodeBase:
    """The source tree of one system, with the locations the log catalogue and faults refer to."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.files: dict[str, list[str]] = {}
        self.handlers: dict[tuple[str, str], _Handler] = {}
        self.loggers: dict[str, str] = {}
        self.env: dict[str, dict[str, str]] = {}
        self.package = {"ticketing": "com.trainticket", "webshop": "hipstershop"}.get(
            system.name, f"io.{_snake(system.name.split('-')[0])}")
        services = {s.name: s for s in system.services}
        for svc in system.services:
            if svc.kind != "service":
                continue
            render = {"java": self._java, "go": self._go, "python": self._python, "node": self._node,
                      "csharp": self._csharp}[svc.runtime]
            render(svc, services)
            self._manifest(svc, services)

    # -- queries ---------------------------------------------------------------------------------------

    def line(self, service: str, method: str, point: str) -> int:
        return self.handlers[(service, method)].lines[point]

    def inject_bug(self, service: str, method: str, kind: str) -> Location:
        """Replace the handler's compute line with its `kind` bug; returns where the bug is."""
        handler = self.handlers[(service, method)]
        line = handler.lines["compute"]
        original = self.files[handler.file][line - 1]
        indent = original[: len(original) - len(original.lstrip())]
        self.files[handler.file][line - 1] = indent + handler.bugs[kind]
        return Location(handler.file, line)

    def set_env(self, service: str, key: str, value: str) -> str | None:
        """Change an environment variable of the service's manifest; returns the old value."""
        old = self.env[service].get(key)
        self.env[service][key] = value
        self._write_manifest(service)
        return old

    def write(self, directory: Path) -> None:
        for rel, lines in self.files.items():
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # -- exceptions and stack traces -------------------------------------------------------------------

    def exception(self, service: str, method: str, point: str) -> str:
        """The exception a handler raises at `point` ('compute' for the bug, 'validate' for bad input)."""
        runtime = self.system.service(service).runtime
        key, _ = subject(method)
        entity = _entity(method)
        if point == "validate":
            return {"java": f"java.lang.IllegalArgumentException: {key} must not be empty",
                    "go": f"invalid argument: {key.lower()} is required",
                    "python": f"ValueError: invalid {key.lower()}",
                    "node": f"Error: invalid {key}",
                    "csharp": f"System.ArgumentException: {key} must be set"}[runtime]
        return {"java": f'java.lang.NullPointerException: Cannot invoke "String.trim()" because the return value '
                        f'of "{self.package}.entity.{entity}.getName()" is null',
                "go": "runtime error: invalid memory address or nil pointer dereference",
                "python": "KeyError: 'name'",
                "node": "TypeError: Cannot read properties of undefined (reading 'name')",
                "csharp": "System.InvalidOperationException: Sequence contains no elements"}[runtime]

    def stack_trace(self, service: str, method: str, point: str) -> str:
        """The exception and its stack trace, with the handler frame at `point`."""
        handler = self.handlers[(service, method)]
        line = handler.lines[point]
        runtime = self.system.service(service).runtime
        exc = self.exception(service, method, point)
        name = Path(handler.file).name
        if runtime == "java":
            controller = handler.frame.replace(".service.", ".controller.").replace("ServiceImpl.", "Controller.")
            cfile = name.replace("ServiceImpl", "Controller")
            frames = [f"{handler.frame}({name}:{line})", f"{controller}({cfile}:{handler.lines['controller']})",
                      "sun.reflect.GeneratedMethodAccessor112.invoke(Unknown Source)",
                      "sun.reflect.DelegatingMethodAccessorImpl.invoke(DelegatingMethodAccessorImpl.java:43)",
                      "java.lang.reflect.Method.invoke(Method.java:498)",
                      "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke"
                      "(InvocableHandlerMethod.java:205)",
                      "org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1067)",
                      "org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:61)",
                      "java.lang.Thread.run(Thread.java:748)"]
            if point == "validate":
                frames.insert(0, "org.springframework.util.Assert.hasText(Assert.java:287)")
            return exc + "".join(f"\n\tat {f}" for f in frames)
        if runtime == "go":
            return (f"{exc}\ngoroutine 1{line:03d} [running]:\nruntime/debug.Stack()\n"
                    "\t/usr/local/go/src/runtime/debug/stack.go:24 +0x65\nmain.recoveryInterceptor.func1()\n"
                    "\t/src/middleware.go:41 +0x7e\npanic({0x9a5e40, 0xe2d6d0})\n"
                    "\t/usr/local/go/src/runtime/panic.go:884 +0x213\n"
                    f"{handler.frame}(0xc000130a80, {{0xb0f6f8, 0xc0003a6d80}}, 0xc0002c4a50)\n"
                    f"\t/src/{name}:{line} +0x1c4")
        code_line = self.files[handler.file][line - 1].strip()
        if runtime == "python":
            return ("Traceback (most recent call last):\n"
                    '  File "/usr/local/lib/python3.10/site-packages/grpc/_server.py", line 443, in _call_behavior\n'
                    "    response_or_iterator = behavior(argument, context)\n"
                    f'  File "/app/{name}", line {line}, in {method}\n    {code_line}\n{exc}')
        if runtime == "node":
            column = len(self.files[handler.file][line - 1]) - len(code_line) + 1
            return (f"{exc}\n    at {handler.frame} (/usr/src/app/{name}:{line}:{column})\n"
                    "    at Object.onReceiveMessage "
                    "(/usr/src/app/node_modules/@grpc/grpc-js/build/src/server.js:1191:21)\n"
                    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)")
        in_container = handler.file.split("/", 1)[1]
        return (f"{exc}\n   at System.Linq.ThrowHelper.ThrowNoElementsException()\n"
                f"   at {handler.frame}({method}Request request, ServerCallContext context) in "
                f"/app/{in_container}:line {line}\n"
                "   at Grpc.Shared.Server.UnaryServerMethodInvoker`3.ResolvedInterceptorInvoker("
                "TRequest resolvedRequest, ServerCallContext resolvedContext)")

    # -- languages -------------------------------------------------------------------------------------

    def _java(self, svc: Service, services: dict[str, Service]) -> None:
        cls = _pascal(svc.name)
        ctrl_cls = java_controller(svc.name)
        module = _snake(re.sub(r"^ts-|-service$|service$", "", svc.name)).replace("_", "") or "app"
        pkg = f"{self.package}.{module}"
        base = f"{svc.name}/src/main/java/{pkg.replace('.', '/')}"
        impl_path, ctrl_path = f"{base}/service/{cls}ServiceImpl.java", f"{base}/controller/{ctrl_cls}.java"
        self.loggers[svc.name] = f"{module[0]}.s.{cls}ServiceImpl"
        impl = [f"package {pkg}.service;", "", "import edu.fudan.common.util.Response;",
                f"import {pkg}.entity.*;", "import org.slf4j.Logger;", "import org.slf4j.LoggerFactory;",
                "import org.springframework.beans.factory.annotation.Autowired;",
                "import org.springframework.http.*;", "import org.springframework.stereotype.Service;",
                "import org.springframework.util.Assert;", "import org.springframework.web.client.RestTemplate;",
                "", "@Service", f"public class {cls}ServiceImpl implements {cls}Service {{", "",
                "    @Autowired", "    private RestTemplate restTemplate;", "",
                f"    private static final Logger LOGGER = LoggerFactory.getLogger({cls}ServiceImpl.class);"]
        ctrl = [f"package {pkg}.controller;", "", f"import {pkg}.service.{cls}Service;",
                "import org.springframework.http.HttpEntity;", "import org.springframework.http.HttpHeaders;",
                "import org.springframework.web.bind.annotation.*;", "",
                "import static org.springframework.http.ResponseEntity.ok;", "", "@RestController",
                f"public class {ctrl_cls} {{", "", "    @Autowired", f"    private {cls}Service service;"]
        for op in svc.operations:
            key, _ = subject(op.method)
            entity = _entity(op.method)
            var = entity[0].lower() + entity[1:]
            lines: dict[str, int] = {}
            impl += ["", "    @Override",
                     f"    public Response {op.method}({entity}Info info, HttpHeaders headers) {{"]
            lines["entry"] = _add(impl, f'        LOGGER.info("[{op.method}][{describe(op.method)}][{key}: {{}}]", '
                                        f"info.get{key}());")
            lines["validate"] = _add(impl, f'        Assert.hasText(info.get{key}(), "{key} must not be empty");')
            body = [self._java_call(c, services, j) for j, c in enumerate(op.calls)]
            cut = len(op.calls) // 2
            for j, text in enumerate(body[:cut]):
                lines[f"call:{j}"] = _add(impl, text)
            impl.append(f"        {entity} {var} = info.get{entity}();")
            lines["compute"] = _add(impl, f'        String label = {var} == null ? "" : {var}.getName();')
            for j, text in enumerate(body[cut:], start=cut):
                lines[f"call:{j}"] = _add(impl, text)
            lines["exit"] = _add(impl, f'        LOGGER.info("[{op.method}][{describe(op.method)} success][{key}: '
                                       f'{{}}]", info.get{key}());')
            impl += [f'        return new Response<>(1, "Success", {var});', "    }"]
            verb, path = _verb_path(op)
            ctrl += ["", f'    @{verb.capitalize()}Mapping(path = "{path}")',
                     f"    public HttpEntity {op.method}(@RequestBody {entity}Info info, "
                     "@RequestHeader HttpHeaders headers) {"]
            lines["controller"] = _add(ctrl, f"        return ok(service.{op.method}(info, headers));")
            ctrl.append("    }")
            bugs = {"exception": f"String label = {var}.getName().trim();",
                    "wrong_value": f'if ({var} != null) return new Response<>(1, "Success", null);',
                    "error_code": f'if ({var} != null) return new Response<>(0, "{entity} not found", null);'}
            self.handlers[(svc.name, op.method)] = _Handler(impl_path, lines, bugs,
                                                            f"{pkg}.service.{cls}ServiceImpl.{op.method}")
        self.files[impl_path] = impl + ["}"]
        self.files[ctrl_path] = ctrl + ["}"]

    def _java_call(self, call, services: dict[str, Service], j: int) -> str:  # type: ignore[no-untyped-def]
        callee = services[call.service]
        op = callee.operation(call.operation)
        if callee.runtime == "redis":
            return f'        String r{j} = redisTemplate.opsForValue().get("{_snake(call.operation)}:" + info.getId());'
        if callee.kind == "database":
            table = call.operation.split(".")[0]
            repo = _pascal(table)[0].lower() + _pascal(table)[1:] + "Repository"
            verb = call.operation.split(".")[1]
            fn = {"select": "findById", "find": "findById", "insert": "save", "update": "save"}[verb]
            return f"        Object r{j} = {repo}.{fn}(info.getId());"
        verb, path = _verb_path(op)
        port = callee.resources()[3]
        return (f'        Response r{j} = restTemplate.exchange("http://{callee.name}:{port}{path}", '
                f"HttpMethod.{verb}, new HttpEntity<>(info, headers), Response.class).getBody();")

    def _go(self, svc: Service, services: dict[str, Service]) -> None:
        path = f"{svc.name}/main.go"
        recv = _pascal(svc.name)[0].lower() + _pascal(svc.name)[1:] + "Server"
        src = ["package main", "", "import (", '\t"context"', "", '\tpb "github.com/example/' +
               self.system.name + '/genproto"', '\t"google.golang.org/grpc/codes"', '\t"google.golang.org/grpc/status"',
               ")", "", f"type {recv} struct {{", "\tclients *clientSet", "}"]
        for op in svc.operations:
            key, _ = subject(op.method)
            lines: dict[str, int] = {}
            fn = op.method[0].upper() + op.method[1:]
            src += ["", f"func (s *{recv}) {fn}(ctx context.Context, req *pb.{fn}Request) (*pb.{fn}Response, error) {{"]
            lines["entry"] = _add(src, f'\tlog.WithField("request_id", requestID(ctx)).Infof("[{fn}] received '
                                       'request")')
            lines["validate"] = _add(src, f'\tif req.Get{key}() == "" {{ return nil, '
                                          f'status.Error(codes.InvalidArgument, "{key.lower()} is required") }}')
            lines["controller"] = lines["entry"]
            cut = len(op.calls) // 2
            calls = [self._go_call(c, services, j) for j, c in enumerate(op.calls)]
            for j, text in enumerate(calls[:cut]):
                lines[f"call:{j}"] = _add(src, text[0])
                src.append(text[1])
            src.append(f"\tresult := &pb.{fn}Response{{}}")
            lines["compute"] = _add(src, "\tresult.Items = collect(req.GetItems())")
            for j, text in enumerate(calls[cut:], start=cut):
                lines[f"call:{j}"] = _add(src, text[0])
                src.append(text[1])
            lines["exit"] = _add(src, f'\tlog.Infof("[{fn}] completed request")')
            src += ["\treturn result, nil", "}"]
            bugs = {"exception": "result.Items = collect(req.GetItems()[0].Children)",
                    "wrong_value": "if len(req.GetItems()) > 0 { return &pb." + fn + "Response{}, nil }",
                    "error_code": 'if len(req.GetItems()) > 0 { return nil, '
                                  'status.Error(codes.NotFound, "not found") }'}
            self.handlers[(svc.name, op.method)] = _Handler(path, lines, bugs, f"main.(*{recv}).{fn}")
        self.files[path] = src

    def _go_call(self, call, services: dict[str, Service], j: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        callee = services[call.service]
        fn = call.operation[0].upper() + call.operation[1:]
        client = _pascal(callee.name)[0].lower() + _pascal(callee.name)[1:]
        if callee.kind != "service":
            first = f'\tr{j}, err := s.clients.{client}.Do(ctx, "{call.operation}", req.GetId()).Result()'
        else:
            first = f"\tr{j}, err := s.clients.{client}.{fn}(ctx, &pb.{fn}Request{{Id: req.GetId()}})"
        return first, (f"\tif err != nil {{ return nil, status.Errorf(codes.Internal, "
                       f'"failed to call {callee.name}: %v", err) }}; _ = r{j}')

    def _python(self, svc: Service, services: dict[str, Service]) -> None:
        path = f"{svc.name}/{_snake(svc.name)}_server.py"
        cls = _pascal(svc.name)
        src = ["import logging", "", "import grpc", "", "import demo_pb2", "import demo_pb2_grpc", "",
               'logger = logging.getLogger("' + svc.name + '")', "", "",
               f"class {cls}(demo_pb2_grpc.{cls}Servicer):"]
        for op in svc.operations:
            key, _ = subject(op.method)
            lines: dict[str, int] = {}
            src += ["", f"    def {op.method}(self, request, context):"]
            lines["entry"] = _add(src, f'        logger.info("[Recv {op.method}] {key.lower()}=%s", request.id)')
            lines["validate"] = _add(src, f'        if not request.id: raise ValueError("invalid {key.lower()}")')
            lines["controller"] = lines["entry"]
            cut = len(op.calls) // 2
            calls = [f"        r{j} = self.{_snake(services[c.service].name)}.{c.operation}(request)"
                     for j, c in enumerate(op.calls)]
            for j, text in enumerate(calls[:cut]):
                lines[f"call:{j}"] = _add(src, text)
            src.append("        items = dict(request.attributes)")
            lines["compute"] = _add(src, '        label = items.get("name", "")')
            for j, text in enumerate(calls[cut:], start=cut):
                lines[f"call:{j}"] = _add(src, text)
            lines["exit"] = _add(src, f'        logger.info("[{op.method}] done")')
            src.append(f"        return demo_pb2.{op.method}Response(label=label)")
            bugs = {"exception": 'label = items["name"]',
                    "wrong_value": f"return demo_pb2.{op.method}Response()",
                    "error_code": f'context.abort(grpc.StatusCode.NOT_FOUND, "{op.method}: item not found")'}
            self.handlers[(svc.name, op.method)] = _Handler(path, lines, bugs, op.method)
        self.files[path] = src

    def _node(self, svc: Service, services: dict[str, Service]) -> None:
        path = f"{svc.name}/server.js"
        src = ["'use strict';", "", "const grpc = require('@grpc/grpc-js');",
               "const logger = require('./logger');", "const clients = require('./clients');"]
        for op in svc.operations:
            lines: dict[str, int] = {}
            fn = op.method[0].lower() + op.method[1:]
            src += ["", f"async function {fn} (call, callback) {{"]
            lines["entry"] = _add(src, f"  logger.info('received {describe(op.method).lower()} request');")
            lines["validate"] = _add(src, "  if (!call.request) { throw new Error('invalid request'); }")
            lines["controller"] = lines["entry"]
            cut = len(op.calls) // 2
            calls = [f"  const r{j} = await clients.{_snake(c.service)}.{c.operation}(call.request);"
                     for j, c in enumerate(op.calls)]
            for j, text in enumerate(calls[:cut]):
                lines[f"call:{j}"] = _add(src, text)
            lines["compute"] = _add(src, "  const name = (call.request.item || {}).name;")
            for j, text in enumerate(calls[cut:], start=cut):
                lines[f"call:{j}"] = _add(src, text)
            lines["exit"] = _add(src, f"  logger.info('{describe(op.method).lower()} request successful');")
            src += ["  callback(null, { name });", "}"]
            bugs = {"exception": "const name = call.request.item.name;",
                    "wrong_value": "if (call.request.item) { return callback(null, {}); }",
                    "error_code": "if (call.request.item) { return callback({ code: grpc.status.NOT_FOUND }); }"}
            self.handlers[(svc.name, op.method)] = _Handler(path, lines, bugs, fn)
        src += ["", "module.exports = { " + ", ".join(o.method[0].lower() + o.method[1:] for o in svc.operations)
                + " };"]
        self.files[path] = src

    def _csharp(self, svc: Service, services: dict[str, Service]) -> None:
        cls = _pascal(svc.name)
        path = f"{svc.name}/src/services/{cls}.cs"
        src = ["using System.Linq;", "using System.Threading.Tasks;", "using Grpc.Core;", "using Hipstershop;", "",
               f"namespace {_snake(svc.name)}.services", "{", f"    public class {cls} : {cls}Base", "    {"]
        for op in svc.operations:
            lines: dict[str, int] = {}
            src += ["", f"        public override async Task<{op.method}Response> {op.method}({op.method}Request "
                        "request, ServerCallContext context)", "        {"]
            lines["entry"] = _add(src, f'            Console.WriteLine($"{op.method}Async called with '
                                       'userId={request.UserId}");')
            lines["validate"] = _add(src, "            if (string.IsNullOrEmpty(request.UserId)) "
                                          "throw new ArgumentException(\"UserId must be set\");")
            lines["controller"] = lines["entry"]
            cut = len(op.calls) // 2
            calls = [f"            var r{j} = await _store.{c.operation.capitalize()}Async(request.UserId);"
                     for j, c in enumerate(op.calls)]
            for j, text in enumerate(calls[:cut]):
                lines[f"call:{j}"] = _add(src, text)
            lines["compute"] = _add(src, '            var first = request.Items.FirstOrDefault()?.ProductId ?? "";')
            for j, text in enumerate(calls[cut:], start=cut):
                lines[f"call:{j}"] = _add(src, text)
            lines["exit"] = _add(src, f'            Console.WriteLine($"{op.method}Async finished");')
            src += [f"            return new {op.method}Response();", "        }"]
            bugs = {"exception": "var first = request.Items.First().ProductId;",
                    "wrong_value": f"if (request.Items.Count > 0) return new {op.method}Response();",
                    "error_code": 'if (request.Items.Count > 0) throw new RpcException(new Status(StatusCode.NotFound, '
                                  '"cart not found"));'}
            frame = f"{_snake(svc.name)}.services.{cls}.{op.method}"
            self.handlers[(svc.name, op.method)] = _Handler(path, lines, bugs, frame)
        self.files[path] = src + ["    }", "}"]

    # -- manifests -------------------------------------------------------------------------------------

    def _manifest(self, svc: Service, services: dict[str, Service]) -> None:
        env: dict[str, str] = {"LOG_LEVEL": "INFO", "PORT": str(svc.resources()[3])}
        for op in svc.operations:
            for call in op.calls:
                for target in [call.service] + ([call.fallback[0]] if call.fallback else []):
                    callee = services[target]
                    prefix = config_prefix(target)
                    env[f"{prefix}_HOST"] = target
                    env[f"{prefix}_PORT"] = str(callee.resources()[3])
                    if callee.kind == "service":
                        env[f"{prefix}_TIMEOUT_MS"] = str(int(call.timeout_ms))
        if any(services[c.service].kind != "service" for op in svc.operations for c in op.calls):
            env["DB_POOL_MAX_SIZE"] = "10"
        self.env[svc.name] = env
        self._write_manifest(svc.name)

    def _write_manifest(self, service: str) -> None:
        svc = self.system.service(service)
        cpu, mem, _, port = svc.resources()
        lines = ["apiVersion: apps/v1", "kind: Deployment", "metadata:", f"  name: {service}",
                 f"  namespace: {self.system.namespace}", "spec:", f"  replicas: {svc.replicas}", "  template:",
                 "    spec:", "      containers:", f"        - name: {service}",
                 f"          image: {self.system.namespace}/{service}", "          ports:",
                 f"            - containerPort: {port}", "          resources:", "            limits:",
                 f'              cpu: "{int(cpu * 1000)}m"', f"              memory: {int(mem)}Mi", "          env:"]
        for key, value in self.env[service].items():
            lines += [f"            - name: {key}", f'              value: "{value}"']
        self.files[f"{service}/deploy.yaml"] = lines


def java_controller(service: str) -> str:
    """The Spring controller class of a Java service (`ts-order-service` -> `OrderController`)."""
    return f"{_pascal(service)}Controller"


def java_repository(table: str) -> str:
    """The Spring Data repository of a table or collection (`orders_other` -> `OrdersOtherRepository`)."""
    return f"{_pascal(table)}Repository"


def config_prefix(service: str) -> str:
    """`ts-order-service` -> `ORDER_SERVICE`: the env-var prefix of a dependency's settings."""
    return re.sub(r"^TS_", "", service.upper().replace("-", "_"))


def _entity(method: str) -> str:
    key, _ = subject(method)
    base = re.sub(r"(Id|Name|Type|Number|Words|Count)$", "", key) or "Request"
    return base[0].upper() + base[1:]


def _verb_path(op: Operation) -> tuple[str, str]:
    verb, _, path = op.name.partition(" ")
    if verb in ("GET", "POST", "PUT", "DELETE") and path:
        return verb, path
    return "POST", "/" + op.name.replace(".", "/")


def _add(lines: list[str], text: str) -> int:
    lines.append(text)
    return len(lines)
