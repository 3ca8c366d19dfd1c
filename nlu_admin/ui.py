"""Words of the NLU pages, in the admin's language."""
from __future__ import annotations

STRINGS = {
    "en": {
        "nlu": "Bot training", "data": "Training data", "review": "Review queue", "training": "Train and evaluate",
        "models": "Models", "changes": "Change log", "intent": "Intent", "examples": "Examples",
        "warnings": "Warnings", "no_warnings": "No warnings.", "add": "Add", "save": "Save", "delete": "Delete",
        "move_to": "Intent", "example": "Example", "language": "Language", "who": "Who", "when": "When",
        "what": "What", "before": "Before", "after": "After", "source": "Source",
        "duplicate": "«{text}» is an example of {intent} ({language}) and also of {others}.",
        "too_few": "{intent} has only {count} examples in {language} (at least {min} wanted).",
        "held_out": "«{text}» ({intent}, {language}) is in the held-out test set and in the training data "
                    "({others}): the evaluation would flatter the model.",
        "annotation_help": "Mark entities inline, as Rasa does: [tomorrow](time), [cardiology](department), "
                           "[Dr Khalid](practitioner). The time, department and doctor readers are rule-based; "
                           "annotations document the example and are scored when they are in the held-out set.",
        "all": "All", "fallback": "Not understood", "out_of_scope": "Out of scope",
        "low_confidence": "Low confidence", "handoff": "Handed to a person", "label": "Add to training",
        "dismiss": "Set aside", "empty_queue": "Nothing to review.", "understood_as": "Understood as",
        "confidence": "confidence", "channel": "Channel", "train": "Train a new model",
        "training_running": "A training is running.", "started_by": "Started by", "status": "Status",
        "stage": "Stage", "progress": "Progress", "elapsed": "elapsed", "evaluation": "Evaluation on held-out data",
        "new_model": "New model", "active_model": "Active model", "accuracy": "Accuracy", "macro_f1": "Macro F1",
        "weighted_f1": "Weighted F1", "precision": "Precision", "recall": "Recall", "f1": "F1",
        "support": "Support", "change": "Δ F1", "confusion": "Confusion matrix (new model)",
        "confusion_old": "Confusion matrix (active model)", "entities": "Entity scores",
        "errors": "Held-out utterances the new model gets wrong", "activate": "Activate this model",
        "rollback": "Roll back to the previous model", "active": "active", "previous": "previous",
        "activated": "Model activated: the bot now uses it.", "rolled_back": "Rolled back to the previous model.",
        "rasa_servers": "Rasa servers", "loaded": "loaded", "unreachable": "unreachable",
        "history": "Activation history", "file": "File", "trained_by": "Trained by", "created": "Created",
        "reproduce": "Reproduce by hand", "job": "Training", "log": "Log", "no_jobs": "No training yet.",
        "added": "Added to the training data.", "saved": "Saved.", "deleted": "Deleted.",
        "set_aside": "Set aside.", "time_help": "Training takes a few minutes; you can leave this page.",
        "no_active": "no active model", "stage_preparing": "Preparing", "stage_featurizing": "Reading the data",
        "stage_training_classifier": "Training the intent classifier", "stage_training_dialogue": "Training the dialogue rules",
        "stage_packaging": "Saving the model", "stage_evaluating": "Evaluating on held-out data", "stage_done": "Done",
        "status_running": "running", "status_succeeded": "done", "status_failed": "failed",
        "status_interrupted": "interrupted", "summary": "Summary", "intents": "Intents", "open": "Open", "entity": "Entity", "extractor": "Read by",
        "expected": "held-out intent", "predicted": "predicted",
    },
    "ar": {
        "nlu": "تدريب المساعد", "data": "بيانات التدريب", "review": "رسائل للمراجعة", "training": "التدريب والتقييم",
        "models": "النماذج", "changes": "سجل التعديلات", "intent": "النية", "examples": "الأمثلة",
        "warnings": "تنبيهات", "no_warnings": "لا توجد تنبيهات.", "add": "إضافة", "save": "حفظ", "delete": "حذف",
        "move_to": "النية", "example": "المثال", "language": "اللغة", "who": "من", "when": "متى",
        "what": "ماذا", "before": "قبل", "after": "بعد", "source": "المصدر",
        "duplicate": "«{text}» مثال على {intent} ({language}) وعلى {others} أيضًا.",
        "too_few": "للنية {intent} {count} أمثلة فقط في {language} (المطلوب {min} على الأقل).",
        "held_out": "«{text}» ({intent}، {language}) موجود في مجموعة الاختبار وفي بيانات التدريب ({others}): "
                    "سيبدو التقييم أفضل من الحقيقة.",
        "annotation_help": "حدّد الكيانات داخل النص كما في Rasa: ‏[بكرة](time)، ‏[القلب](department)، "
                           "‏[د. خالد](practitioner). قارئ المواعيد والأقسام والأطباء قائم على القواعد؛ "
                           "التحديد يوثّق المثال ويُقيَّم إذا كان في مجموعة الاختبار.",
        "all": "الكل", "fallback": "لم تُفهم", "out_of_scope": "خارج النطاق", "low_confidence": "ثقة منخفضة",
        "handoff": "حُوّلت لموظف", "label": "أضف للتدريب", "dismiss": "تجاهل", "empty_queue": "لا شيء للمراجعة.",
        "understood_as": "فُهمت على أنها", "confidence": "الثقة", "channel": "القناة", "train": "درّب نموذجًا جديدًا",
        "training_running": "يجري تدريب الآن.", "started_by": "بدأه", "status": "الحالة", "stage": "المرحلة",
        "progress": "التقدم", "elapsed": "منذ", "evaluation": "التقييم على بيانات الاختبار",
        "new_model": "النموذج الجديد", "active_model": "النموذج الحالي", "accuracy": "الدقة الكلية",
        "macro_f1": "F1 (متوسط)", "weighted_f1": "F1 (موزون)", "precision": "الدقة", "recall": "الاستدعاء",
        "f1": "F1", "support": "العدد", "change": "فرق F1", "confusion": "مصفوفة الالتباس (النموذج الجديد)",
        "confusion_old": "مصفوفة الالتباس (النموذج الحالي)", "entities": "نتائج الكيانات",
        "errors": "جمل الاختبار التي يخطئ فيها النموذج الجديد", "activate": "فعّل هذا النموذج",
        "rollback": "ارجع إلى النموذج السابق", "active": "الحالي", "previous": "السابق",
        "activated": "تم تفعيل النموذج: المساعد يستخدمه الآن.", "rolled_back": "تمت العودة إلى النموذج السابق.",
        "rasa_servers": "خوادم Rasa", "loaded": "محمّل", "unreachable": "لا يستجيب",
        "history": "سجل التفعيل", "file": "الملف", "trained_by": "درّبه", "created": "أُنشئ",
        "reproduce": "للتحقق يدويًا", "job": "تدريب", "log": "السجل", "no_jobs": "لا يوجد تدريب بعد.",
        "added": "أضيف إلى بيانات التدريب.", "saved": "تم الحفظ.", "deleted": "تم الحذف.", "set_aside": "تم التجاهل.",
        "time_help": "يستغرق التدريب بضع دقائق؛ يمكنك مغادرة الصفحة.", "no_active": "لا يوجد نموذج مفعّل",
        "stage_preparing": "تجهيز", "stage_featurizing": "قراءة البيانات",
        "stage_training_classifier": "تدريب مصنّف النوايا", "stage_training_dialogue": "تدريب قواعد الحوار",
        "stage_packaging": "حفظ النموذج", "stage_evaluating": "التقييم على بيانات الاختبار", "stage_done": "انتهى",
        "status_running": "جارٍ", "status_succeeded": "انتهى", "status_failed": "فشل", "status_interrupted": "توقف",
        "summary": "الملخص", "intents": "النوايا", "open": "فتح", "entity": "الكيان", "extractor": "يقرؤه",
        "expected": "النية الصحيحة", "predicted": "توقع النموذج",
    },
}


def strings(language: str) -> dict:
    return STRINGS["ar" if language == "ar" else "en"]
