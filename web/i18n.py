"""The pages' words in Chinese and English. A key missing in one language shows the other
(then the key itself), so a half-translated page still reads."""

from __future__ import annotations

LANGUAGES = ("zh", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "app.name": {"zh": "嘉兴总分馆 · Branchline", "en": "Branchline · Jiaxing library network"},
    "nav.acquisitions": {"zh": "采访", "en": "Acquisitions"},
    "nav.cataloging": {"zh": "编目", "en": "Cataloging"},
    "nav.desk": {"zh": "流通台", "en": "Branch desk"},
    "nav.dispatch": {"zh": "调度", "en": "Dispatch"},
    "nav.driver": {"zh": "司机路线", "en": "My route"},
    "nav.report": {"zh": "运行报告", "en": "Network report"},
    "nav.admin": {"zh": "用户管理", "en": "Users"},
    "signin.title": {"zh": "登录", "en": "Sign in"},
    "signin.username": {"zh": "用户名", "en": "User name"},
    "signin.password": {"zh": "密码", "en": "Password"},
    "signin.submit": {"zh": "登录", "en": "Sign in"},
    "signin.wrong": {"zh": "用户名或密码不正确。", "en": "Wrong user name or password."},
    "signout": {"zh": "退出", "en": "Sign out"},
    "lang.switch": {"zh": "English", "en": "中文"},
    "forbidden.title": {"zh": "无权访问", "en": "Not allowed"},
    "forbidden.body": {"zh": "您的账号不能打开这个页面。",
                       "en": "Your account may not open this page."},
    "notfound.title": {"zh": "找不到页面", "en": "Page not found"},
    "error.title": {"zh": "出错了", "en": "Something went wrong"},
    "error.csrf": {"zh": "表单已过期，请重新提交。",
                   "en": "The form expired: please send it again."},
    "home": {"zh": "首页", "en": "Home"},
    "admin.title": {"zh": "用户管理", "en": "Users"},
    "admin.add": {"zh": "添加或修改用户", "en": "Add or change a user"},
    "admin.role": {"zh": "角色", "en": "Role"},
    "admin.site": {"zh": "馆点代码", "en": "Site code"},
    "admin.driver": {"zh": "司机编号", "en": "Driver id"},
    "admin.name": {"zh": "姓名", "en": "Name"},
    "admin.active": {"zh": "启用", "en": "Active"},
    "admin.save": {"zh": "保存", "en": "Save"},
    "admin.saved": {"zh": "已保存。", "en": "Saved."},
    "admin.keep_password": {"zh": "留空则不修改密码", "en": "leave empty to keep the password"},
    "save": {"zh": "保存", "en": "Save"},
    # Statuses the services answer with, one list for every page (an item's, a route's
    # and its stops', a crate's, a shipment's).
    "status.available": {"zh": "在架", "en": "available"},
    "status.on_loan": {"zh": "借出", "en": "on loan"},
    "status.in_transit": {"zh": "在途", "en": "in transit"},
    "status.on_hold_shelf": {"zh": "在预约架", "en": "on the hold shelf"},
    "status.missing": {"zh": "丢失待查", "en": "missing"},
    "status.lost": {"zh": "遗失", "en": "lost"},
    "status.withdrawn": {"zh": "已剔除", "en": "withdrawn"},
    "status.in_processing": {"zh": "加工中", "en": "in processing"},
    "status.on_order": {"zh": "订购中", "en": "on order"},
    "status.planned": {"zh": "已计划", "en": "planned"},
    "status.in_progress": {"zh": "进行中", "en": "in progress"},
    "status.completed": {"zh": "已完成", "en": "completed"},
    "status.cancelled": {"zh": "已取消", "en": "cancelled"},
    "status.pending": {"zh": "待前往", "en": "to do"},
    "status.arrived": {"zh": "已到达", "en": "arrived"},
    "status.served": {"zh": "已完成", "en": "served"},
    "status.unserved": {"zh": "未服务", "en": "not served"},
    "status.loaded": {"zh": "已装车", "en": "on the van"},
    "status.open": {"zh": "装箱中", "en": "open"},
    "status.sealed": {"zh": "已封箱", "en": "sealed"},
    "status.unloaded": {"zh": "已卸车", "en": "unloaded"},
    "status.created": {"zh": "待取件", "en": "waiting"},
    "status.picked_up": {"zh": "已取件", "en": "picked up"},
    "status.delivered": {"zh": "已送达", "en": "delivered"},
    "status.exception": {"zh": "异常", "en": "exception"},
    "yes": {"zh": "是", "en": "yes"},
    "no": {"zh": "否", "en": "no"},
}


def translate(key: str, lang: str) -> str:
    entry = MESSAGES.get(key)
    if entry is None:
        return key
    return entry.get(lang) or entry.get("en") or key


def status(value: str, lang: str) -> str:
    """A service's status word in the reader's language (the word itself if unknown)."""
    key = f"status.{value}"
    return translate(key, lang) if key in MESSAGES else value


def add(messages: dict[str, dict[str, str]]) -> None:
    """A page module's own words."""
    MESSAGES.update(messages)
